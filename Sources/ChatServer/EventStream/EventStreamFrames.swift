import Chat
import NIOCore

/// The bytes of an event stream (`text/event-stream`, as the HTML standard defines it):
/// each event is `event: TYPE`, `data: ` and the chat.v1 JSON of the same event on one
/// line (JSON escapes every line break), and, for an event with an offset, its `id`.
///
/// An event's bytes are made once, for every stream of its channel: the `id` they carry is
/// the channel's own position (`CHANNEL=EPOCH:OFFSET`), which is the whole position of a
/// stream of that one channel. A stream of several channels writes the event without that
/// line and its own position after it (``withoutID(_:)``, ``idLine(_:)``).
enum EventStreamFrames {
    /// Where an event's stream bytes are in ``FrameEncoder/frames(of:)``: after every
    /// WebSocket frame kind.
    static let index = 2 * WireFormat.allCases.count

    /// The stream bytes of `event`, made from its chat.v1 frame; `nil` if chat.v1 says
    /// nothing of it.
    static func frame(of event: ChatEvent, chatV1 frame: ByteBuffer?) -> ByteBuffer? {
        guard let frame, let name = name(of: event) else { return nil }
        let header = frame.readableBytes - WebSocketWire.payloadLength(of: frame)
        guard let json = frame.getSlice(at: frame.readerIndex + header, length: frame.readableBytes - header) else { return nil }
        return self.frame(name: name, json: json, id: entry(of: event))
    }

    /// The chat.v1 frame of `event` (the JSON a stream's `data` carries), made alone.
    static func chatV1Frame(of event: ChatEvent) -> ByteBuffer? {
        WireFormat.frames(of: event)[WireFormat.chatV1.rawValue]
    }

    /// An event of `name` with `json` as its data, and `id` if given.
    static func frame(name: String, json: ByteBuffer, id: EventStreamPosition.Entry?) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: json.readableBytes + name.utf8.count + 120)
        buffer.writeStaticString("event: ")
        buffer.writeString(name)
        buffer.writeStaticString("\ndata: ")
        buffer.writeImmutableBuffer(json)
        buffer.writeStaticString("\n")
        if let id {
            var text = ""
            EventStreamPosition.write(id, into: &text)
            buffer.writeStaticString("id: ")
            buffer.writeString(text)
            buffer.writeStaticString("\n")
        }
        buffer.writeStaticString("\n")
        return buffer
    }

    /// A message (or change) read from the history, as a stream event.
    static func message(_ message: Message) -> ByteBuffer {
        var json = ByteBufferAllocator().buffer(capacity: message.data.readableBytes + 128)
        ChatV1.writeMessage(message, into: &json)
        return frame(name: name(of: .message(message)) ?? "message", json: json, id: entry(of: .message(message)))
    }

    /// A chat.v2 frame (`subscribed`, `refused`, `muted`) as a stream event of `name`.
    static func frame(name: String, webSocketFrame frame: ByteBuffer, id: EventStreamPosition.Entry? = nil) -> ByteBuffer {
        let header = frame.readableBytes - WebSocketWire.payloadLength(of: frame)
        let json = frame.getSlice(at: frame.readerIndex + header, length: frame.readableBytes - header) ?? ByteBuffer()
        return self.frame(name: name, json: json, id: id)
    }

    /// The event's bytes without their `id` line (and without the blank line that ends
    /// them), so that a stream can write its own `id` after them.
    static func withoutID(_ frame: ByteBuffer) -> ByteBuffer {
        // The frame ends "\nid: …\n\n"; the id holds no line break.
        let view = frame.readableBytesView
        guard view.count > 3 else { return frame }
        var end = view.endIndex - 3
        while end > view.startIndex, view[end] != UInt8(ascii: "\n") { end -= 1 }
        guard view[view.index(after: end)...].starts(with: "id: ".utf8) else {
            // No id: everything but the final blank line.
            return frame.getSlice(at: frame.readerIndex, length: frame.readableBytes - 1) ?? frame
        }
        return frame.getSlice(at: frame.readerIndex, length: end - view.startIndex + 1) ?? frame
    }

    /// An `id` line that ends an event: `position` is the stream's, after the event.
    static func idLine(_ position: EventStreamPosition) -> ByteBuffer {
        let text = position.description
        var buffer = ByteBufferAllocator().buffer(capacity: text.utf8.count + 6)
        buffer.writeStaticString("id: ")
        buffer.writeString(text)
        buffer.writeStaticString("\n\n")
        return buffer
    }

    /// A comment that keeps proxies from closing an idle stream.
    static let ping = ByteBuffer(string: ": ping\n\n")

    /// What the event is called in the stream: the chat.v1 `type`.
    static func name(of event: ChatEvent) -> String? {
        switch event {
        case .message(let message):
            switch message.kind {
            case .message: "message"
            case .edit: "edit"
            case .delete: "delete"
            case .react: "react"
            }
        case .reset: "reset"
        case .gap: "gap"
        case .presence: "presence"
        case .members: "members"
        case .join: "join"
        case .leave: "leave"
        case .typing: "typing"
        case .read: "read"
        case .seen: "seen"
        case .moderation(_, .muted): "muted"
        case .moderation: nil
        }
    }

    /// The channel's position after `event`, for the events that move it: a message or
    /// change (its offset), a reset (offset 0 of the new epoch).
    static func entry(of event: ChatEvent) -> EventStreamPosition.Entry? {
        switch event {
        case .message(let message):
            EventStreamPosition.Entry(channel: message.channel, epoch: message.epoch, offset: message.offset)
        case .reset(let channel, let epoch):
            EventStreamPosition.Entry(channel: channel, epoch: epoch, offset: 0)
        default:
            nil
        }
    }
}
