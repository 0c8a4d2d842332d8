// Imports only Foundation: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.
import Foundation

/// What a `chat.v2` client may send (docs/PROTOCOL.md).
///
/// Only the frame's shape is checked here: names, ids and texts are checked by the
/// socket against the same rules as `POST /send/`, so that a refusal can name the
/// subscription or the message it is about.
enum ChatV2Request: Equatable {
    /// Subscribe to `channel`, resuming after `since` in `epoch` when both are given.
    case subscribe(channel: String, resume: Resume?)
    case unsubscribe(channel: String)
    /// Publish `data` to `channel`; `id` makes sending it again safe.
    case send(id: String, channel: String, data: String, name: String?)
    /// Change message `of` of `channel`: new text, gone, or a reaction toggled.
    case change(id: String, channel: String, change: Change, of: Int64)
    /// The person is typing in `channel`.
    case typing(channel: String)
    /// The person has read `channel` up to `offset`.
    case read(channel: String, offset: Int64)
    case ping
    /// A newer token of the same person, before the socket's expires.
    case refresh(token: String)
    case who(channel: String)
    /// A moderator's action in `channel` (the socket checks that its person is one);
    /// `id`, if given, names the answer.
    case moderate(id: String?, channel: String, action: Moderation)
    /// A subscribe whose resume breaks the rules: refused for that channel.
    case badSubscribe(channel: String, reason: String)
    /// A send that cannot be read as text: refused (400) for that id.
    case badSend(id: String, channel: String, reason: String)
    case invalid(String)

    enum Change: Equatable {
        case edit(data: String)
        case delete
        case react(emoji: String)
    }

    /// What a moderator may do over the socket (the user's shape is checked by the socket).
    enum Moderation: Equatable {
        case mute(user: String, seconds: Int64)
        case ban(user: String, seconds: Int64)
        case unban(user: String)
        case slowMode(seconds: Int64)
    }

    /// Longest mute, ban or slow mode a frame may ask for: a year, in seconds.
    static let longestModeration: Int64 = 31_536_000

    struct Resume: Equatable {
        var since: Int64
        var epoch: String
    }

    /// Longest `since`, as for chat.v1 (2^53 − 1: what a JavaScript number holds exactly).
    static let maximumOffset: Int64 = 9_007_199_254_740_991

    private struct Frame: Decodable {
        var type: String
        var channel: String?
        var since: Since?
        var epoch: String?
        var id: String?
        var data: String?
        var name: String?
        var of: Since?
        var offset: Since?
        var emoji: String?
        var token: String?
        var user: String?
        var seconds: Since?
    }

    /// A resume's offset as sent: any JSON value; only a whole number in range is one.
    private struct Since: Decodable {
        var value: Int64?

        init(from decoder: any Decoder) throws {
            value = try? decoder.singleValueContainer().decode(Int64.self)
        }
    }

    init(_ text: String) {
        let frame: Frame
        // A lone UTF-16 surrogate escape (`\ud83d` of a cut emoji) is no text, and would
        // make the whole frame unreadable: it becomes U+FFFD, so the frame can still be
        // answered about its id or channel, and a send that held one is refused.
        let (json, replaced) = Self.replacingLoneSurrogates(Array(text.utf8))
        do {
            frame = try JSONDecoder().decode(Frame.self, from: Data(json))
        } catch DecodingError.typeMismatch(_, let context) where !context.codingPath.isEmpty {
            self = .invalid(Self.wrongType(context))
            return
        } catch DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty {
            self = .invalid(Self.wrongType(context))
            return
        } catch {
            self = .invalid("frames must be JSON objects with a \"type\"")
            return
        }
        func needs(_ value: String?, _ field: String) -> String? {
            if value == nil { return "a \"\(frame.type)\" frame needs \"\(field)\"" }
            return nil
        }
        switch frame.type {
        case "ping":
            self = .ping
        case "refresh":
            guard let token = frame.token else {
                self = .invalid(needs(nil, "token")!)
                return
            }
            self = .refresh(token: token)
        case "who", "unsubscribe":
            guard let channel = frame.channel else {
                self = .invalid(needs(nil, "channel")!)
                return
            }
            self = frame.type == "who" ? .who(channel: channel) : .unsubscribe(channel: channel)
        case "subscribe":
            guard let channel = frame.channel else {
                self = .invalid(needs(nil, "channel")!)
                return
            }
            switch (frame.since, frame.epoch) {
            case (nil, nil):
                self = .subscribe(channel: channel, resume: nil)
            case (let sent?, let epoch?):
                guard let since = sent.value, (0...Self.maximumOffset).contains(since) else {
                    self = .badSubscribe(channel: channel, reason: "since must be a whole number from 0 to \(Self.maximumOffset).")
                    return
                }
                guard Self.isEpoch(epoch) else {
                    self = .badSubscribe(channel: channel, reason: "epoch must be 1–64 letters and digits, as the server sent it.")
                    return
                }
                self = .subscribe(channel: channel, resume: Resume(since: since, epoch: epoch))
            default:
                self = .badSubscribe(channel: channel, reason: "To resume, give both since and epoch (from the last message you received).")
            }
        case "typing":
            guard let channel = frame.channel else {
                self = .invalid(needs(nil, "channel")!)
                return
            }
            self = .typing(channel: channel)
        case "read":
            guard let channel = frame.channel, let sent = frame.offset else {
                self = .invalid(needs(frame.channel, "channel") ?? "a \"read\" frame needs \"offset\"")
                return
            }
            guard let offset = sent.value, (0...Self.maximumOffset).contains(offset) else {
                self = .invalid("offset must be a whole number from 0 to \(Self.maximumOffset)")
                return
            }
            self = .read(channel: channel, offset: offset)
        case "edit", "delete", "react":
            let content: (value: String?, field: String)? = switch frame.type {
            case "edit": (frame.data, "data")
            case "react": (frame.emoji, "emoji")
            default: nil
            }
            if let missing = needs(frame.id, "id") ?? needs(frame.channel, "channel") ?? content.flatMap({ needs($0.value, $0.field) }) {
                self = .invalid(missing)
                return
            }
            let (id, channel) = (frame.id!, frame.channel!)
            guard let of = frame.of?.value, (1...Self.maximumOffset).contains(of) else {
                self = .badSend(id: id, channel: channel, reason: "\"of\" must be the offset of a message: a whole number from 1 to \(Self.maximumOffset).")
                return
            }
            if replaced {
                self = .badSend(
                    id: id, channel: channel,
                    reason: "Invalid \(frame.type): it holds a lone UTF-16 surrogate escape (half of a character, such as a cut emoji); send whole characters."
                )
                return
            }
            let change: Change = switch frame.type {
            case "edit": .edit(data: frame.data!)
            case "react": .react(emoji: frame.emoji!)
            default: .delete
            }
            self = .change(id: id, channel: channel, change: change, of: of)
        case "mute", "ban", "unban", "slowmode":
            let id = frame.id
            if let missing = needs(frame.channel, "channel") ?? (frame.type == "slowmode" ? nil : needs(frame.user, "user")) {
                if let id { self = .badSend(id: id, channel: frame.channel ?? "", reason: missing) } else { self = .invalid(missing) }
                return
            }
            let (channel, user) = (frame.channel!, frame.user ?? "")
            var seconds: Int64 = 0
            if frame.type != "unban" {
                guard let sent = frame.seconds?.value, (0...Self.longestModeration).contains(sent) else {
                    let reason = "a \"\(frame.type)\" frame needs \"seconds\": a whole number from 0 to \(Self.longestModeration)"
                    if let id { self = .badSend(id: id, channel: channel, reason: reason) } else { self = .invalid(reason) }
                    return
                }
                seconds = sent
            }
            let action: Moderation = switch frame.type {
            case "mute": .mute(user: user, seconds: seconds)
            case "ban": .ban(user: user, seconds: seconds)
            case "unban": .unban(user: user)
            default: .slowMode(seconds: seconds)
            }
            self = .moderate(id: id, channel: channel, action: action)
        case "send":
            if let missing = needs(frame.id, "id") ?? needs(frame.channel, "channel") ?? needs(frame.data, "data") {
                self = .invalid(missing)
                return
            }
            if replaced {
                self = .badSend(
                    id: frame.id!, channel: frame.channel!,
                    reason: "Invalid message: it holds a lone UTF-16 surrogate escape (half of a character, such as a cut emoji); send whole characters."
                )
                return
            }
            self = .send(id: frame.id!, channel: frame.channel!, data: frame.data!, name: frame.name)
        default:
            self = .invalid(
                "unknown frame type \"\(String(frame.type.unicodeScalars.prefix(16)))\"; chat.v2 frames are subscribe, unsubscribe, send, edit, delete, react, typing, read, who, ping, mute, ban, unban, slowmode"
            )
        }
    }

    /// `json` with every `\uXXXX` escape of a surrogate that is not half of a pair
    /// replaced by `\ufffd`; whether any was.
    static func replacingLoneSurrogates(_ json: [UInt8]) -> (json: [UInt8], replaced: Bool) {
        func escape(at index: Int) -> UInt16? {
            guard index + 5 < json.count, json[index] == UInt8(ascii: "\\"), json[index + 1] == UInt8(ascii: "u") else { return nil }
            var value: UInt16 = 0
            for byte in json[(index + 2)...(index + 5)] {
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt16(digit)
            }
            return value
        }
        guard json.contains(UInt8(ascii: "\\")) else { return (json, false) }
        var output: [UInt8] = []
        output.reserveCapacity(json.count)
        var replaced = false
        var index = 0
        while index < json.count {
            guard json[index] == UInt8(ascii: "\\"), index + 1 < json.count else {
                output.append(json[index])
                index += 1
                continue
            }
            guard let unit = escape(at: index) else {
                // Another escape (\n, \\, \" …): both bytes as they are.
                output.append(contentsOf: json[index...(index + 1)])
                index += 2
                continue
            }
            if (0xD800...0xDBFF).contains(unit), let low = escape(at: index + 6), (0xDC00...0xDFFF).contains(low) {
                output.append(contentsOf: json[index..<(index + 12)])
                index += 12
            } else if (0xD800...0xDFFF).contains(unit) {
                output.append(contentsOf: Array("\\ufffd".utf8))
                replaced = true
                index += 6
            } else {
                output.append(contentsOf: json[index..<(index + 6)])
                index += 6
            }
        }
        return (output, replaced)
    }

    /// An epoch as the server makes them: 1–64 ASCII letters and digits.
    static func isEpoch(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            }
    }

    private static func wrongType(_ context: DecodingError.Context) -> String {
        let field = context.codingPath.last?.stringValue ?? "field"
        let expected = ["since", "of", "offset", "seconds"].contains(field) ? "a whole number" : "a string"
        return "the field \"\(String(field.unicodeScalars.prefix(16)))\" has the wrong type: it must be \(expected)"
    }
}
