import Chat
import Foundation
import NIOCore

/// The WebSocket subprotocol a socket speaks, chosen from those its client offered.
enum Subprotocol: String, Sendable, CustomStringConvertible {
    /// No subprotocol: the original app's raw text frames.
    case original
    /// `chat.v1`: one channel per socket, JSON frames (docs/PROTOCOL.md).
    case chatV1 = "chat.v1"
    /// `chat.v2`: any number of channels per socket, and sends with acknowledgements.
    case chatV2 = "chat.v2"

    /// Picks chat.v2 over chat.v1 when a client offers both; `nil` if it offered only
    /// ones the server does not speak.
    init?(offered: [String]) {
        let names = offered.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if names.isEmpty {
            self = .original
        } else if names.contains(Self.chatV2.rawValue) {
            self = .chatV2
        } else if names.contains(Self.chatV1.rawValue) {
            self = .chatV1
        } else {
            return nil
        }
    }

    /// How its messages are framed: chat.v2 shares chat.v1's frames, so one encoding
    /// serves both.
    var wireFormat: WireFormat { self == .original ? .raw : .chatV1 }

    var description: String { self == .original ? "original" : rawValue }
}

/// How a socket receives messages: the frames made once per event for all its sockets.
enum WireFormat: Int, Sendable, CaseIterable {
    /// No subprotocol: each message is one text frame holding exactly `data`, as the
    /// original app sent it.
    case raw = 0
    /// Subprotocol `chat.v1`: JSON frames with a `type` (docs/PROTOCOL.md).
    case chatV1 = 1

    /// Every format's frame of `event`, indexed by `rawValue`: made once per event.
    ///
    /// The original protocol carries messages only: it has no way to say `reset` or `gap`.
    static func frames(of event: ChatEvent) -> [ByteBuffer?] {
        switch event {
        case .message(let message):
            // The original protocol has words only: a change to them, or what is left of
            // a deleted message (read back from the history), is not for it.
            [
                message.kind == .message && message.state?.deleted != true ? WebSocketWire.frame(opcode: WebSocketWire.text, payload: message.data) : nil,
                ChatV1.message(message),
            ]
        case .reset(let channel, let epoch):
            [nil, ChatV1.reset(channel: channel, epoch: epoch)]
        case .gap(let channel, let from, let to):
            [nil, ChatV1.gap(channel: channel, from: from, to: to)]
        case .presence(let channel, let online):
            [nil, ChatV1.presence(channel: channel, online: online)]
        case .members(let channel, let online, let members):
            [nil, ChatV1.members(channel: channel, online: online, members: members)]
        case .join(let channel, let member):
            [nil, ChatV1.person("join", channel: channel, member: member)]
        case .leave(let channel, let member):
            [nil, ChatV1.person("leave", channel: channel, member: member)]
        case .typing(let channel, let member):
            [nil, ChatV1.person("typing", channel: channel, member: member)]
        case .read(let channel, _, let offset):
            [nil, ChatV1.read(channel: channel, offset: offset)]
        case .seen(let channel, let member, let offset):
            // Only a one-to-one room says who saw what: in a room of many it would be a
            // frame per person per message read.
            [nil, RoomPolicy.pair(of: channel) == nil ? nil : ChatV1.seen(channel: channel, member: member, offset: offset)]
        case .moderation(let channel, .muted(_, let until)):
            [nil, ChatV1.muted(channel: channel, until: until)]
        case .moderation:
            // A ban closes or ends what it is about, each socket in its own words.
            [nil, nil]
        }
    }
}

/// The JSON frames of `chat.v1`.
enum ChatV1 {
    /// A message, or a change to one (`edit`, `delete`, `react`), with what a history
    /// read found became of it.
    static func writeMessage(_ message: Message, into json: inout ByteBuffer) {
        switch message.kind {
        case .message: json.writeStaticString(#"{"type":"message","channel":"#)
        case .edit: json.writeStaticString(#"{"type":"edit","channel":"#)
        case .delete: json.writeStaticString(#"{"type":"delete","channel":"#)
        case .react: json.writeStaticString(#"{"type":"react","channel":"#)
        }
        JSON.writeString(message.channel.rawValue, into: &json)
        json.writeStaticString(#","offset":"#)
        json.writeString(String(message.offset))
        json.writeStaticString(#","epoch":"#)
        JSON.writeString(message.epoch, into: &json)
        if let of = message.kind.target {
            json.writeStaticString(#","of":"#)
            json.writeString(String(of))
        }
        json.writeStaticString(#","time":"#)
        json.writeString(String(message.time))
        if let from = message.from {
            json.writeStaticString(#","from":"#)
            JSON.writeString(from, into: &json)
        }
        if let name = message.name {
            json.writeStaticString(#","name":"#)
            JSON.writeString(name, into: &json)
        }
        let state = message.state
        if let edited = state?.edited {
            json.writeStaticString(#","edited":"#)
            json.writeString(String(edited))
        }
        if state?.deleted == true {
            // The text is gone; only that it was there is left.
            json.writeStaticString(#","deleted":true}"#)
            return
        }
        switch message.kind {
        case .message, .edit:
            json.writeStaticString(#","data":"#)
            JSON.writeString(message.data.readableBytesView, into: &json)
        case .delete:
            break
        case .react(_, let on):
            json.writeStaticString(#","emoji":"#)
            JSON.writeString(message.data.readableBytesView, into: &json)
            json.writeStaticString(on ? #","on":true"# : #","on":false"#)
        }
        if let reactions = state?.reactions, !reactions.isEmpty {
            json.writeStaticString(#","reactions":{"#)
            for (index, reaction) in reactions.enumerated() {
                if index > 0 { json.writeStaticString(",") }
                JSON.writeString(reaction.emoji, into: &json)
                json.writeStaticString(":[")
                for (place, id) in reaction.from.enumerated() {
                    if place > 0 { json.writeStaticString(",") }
                    JSON.writeString(id, into: &json)
                }
                json.writeStaticString("]")
            }
            json.writeStaticString("}")
        }
        json.writeStaticString("}")
    }

    /// How far the socket's person has read the channel (on every one of their sockets).
    static func read(channel: ChannelName, offset: Int64) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"read","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeString(#","offset":\#(offset)}"#)
        }
    }

    /// The other person of a one-to-one room has read it up to `offset`.
    static func seen(channel: ChannelName, member: Member, offset: Int64) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 160) { json in
            json.writeStaticString(#"{"type":"seen","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeStaticString(#","member":"#)
            writeMember(member, into: &json)
            json.writeString(#","offset":\#(offset)}"#)
        }
    }

    static func message(_ message: Message) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: message.data.readableBytes + 128) { json in
            writeMessage(message, into: &json)
        }
    }

    /// The channel's history was lost (or the client's offset is not in it); `epoch` is
    /// the current one, `null` if the channel has no history at all.
    static func reset(channel: ChannelName, epoch: String?) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"reset","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeStaticString(#","epoch":"#)
            if let epoch { JSON.writeString(epoch, into: &json) } else { json.writeStaticString("null") }
            json.writeStaticString("}")
        }
    }

    /// Messages `from`…`to` were not sent on this socket; fetch them from /history.
    static func gap(channel: ChannelName, from: Int64, to: Int64) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"gap","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeString(#","from":\#(from),"to":\#(to)}"#)
        }
    }

    static func presence(channel: ChannelName, online: Int) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"presence","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeString(#","online":\#(online)}"#)
        }
    }

    static func writeMember(_ member: Member, into json: inout ByteBuffer) {
        json.writeStaticString(#"{"id":"#)
        JSON.writeString(member.id, into: &json)
        if let name = member.name {
            json.writeStaticString(#","name":"#)
            JSON.writeString(name, into: &json)
        }
        json.writeStaticString("}")
    }

    /// Everyone in the channel.
    static func members(channel: ChannelName, online: Int, members: [Member]) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96 + members.count * 64) { json in
            json.writeStaticString(#"{"type":"members","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeString(#","online":\#(online),"members":["#)
            for (index, member) in members.enumerated() {
                if index > 0 { json.writeStaticString(",") }
                writeMember(member, into: &json)
            }
            json.writeStaticString("]}")
        }
    }

    /// `join` or `leave` of one person.
    static func person(_ type: String, channel: ChannelName, member: Member) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 128) { json in
            json.writeString(#"{"type":"\#(type)","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeStaticString(#","member":"#)
            writeMember(member, into: &json)
            json.writeStaticString("}")
        }
    }

    /// The socket's person is muted in the channel until `until` (Unix ms); 0: no longer.
    static func muted(channel: ChannelName, until: Int64) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"muted","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeString(#","until":\#(until)}"#)
        }
    }

    static func pong() -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 16) { $0.writeStaticString(#"{"type":"pong"}"#) }
    }

    /// A `refresh` was taken: the socket now closes at `expires` (Unix seconds).
    static func refreshed(expires: Int64) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 48) { json in
            json.writeString(#"{"type":"refreshed","expires":\#(expires)}"#)
        }
    }

    /// Who a signed-in socket is, first on it: its identity, the name it shows, whether
    /// it moderates, and when its token expires (Unix seconds).
    static func welcome(_ signIn: SignIn) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 160) { json in
            json.writeStaticString(#"{"type":"welcome","user":"#)
            JSON.writeString(signIn.identity, into: &json)
            json.writeStaticString(#","name":"#)
            if let name = signIn.name { JSON.writeString(name, into: &json) } else { json.writeStaticString("null") }
            json.writeString(#","moderator":\#(signIn.isModerator),"expires":\#(signIn.expiry)}"#)
        }
    }

    static func error(_ text: String) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: text.utf8.count + 32) { json in
            json.writeStaticString(#"{"type":"error","message":"#)
            JSON.writeString(text, into: &json)
            json.writeStaticString("}")
        }
    }
}

/// Writes JSON strings without Foundation, straight from UTF-8 bytes.
enum JSON {
    static func writeString(_ text: String, into buffer: inout ByteBuffer) {
        var text = text
        text.withUTF8 { writeString(bytes: UnsafeRawBufferPointer($0), into: &buffer) }
    }

    static func writeString(_ bytes: ByteBufferView, into buffer: inout ByteBuffer) {
        bytes.withUnsafeBytes { writeString(bytes: $0, into: &buffer) }
    }

    /// Copies runs of bytes that need no escaping in one go; escapes the rest.
    static func writeString(bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: bytes.count + 2)
        buffer.writeInteger(UInt8(ascii: "\""))
        var runStart = 0
        for index in 0..<bytes.count {
            let byte = bytes[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            if runStart < index { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<index])) }
            runStart = index + 1
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            default:
                let hex: StaticString = "0123456789abcdef"
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex.utf8Start[Int(byte >> 4)])
                buffer.writeInteger(hex.utf8Start[Int(byte & 0xF)])
            }
        }
        if runStart < bytes.count { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart...])) }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
