import NIOCore

/// One chat message as the broker stored it.
public struct Message: Sendable, Hashable {
    /// The channel it was published to.
    public var channel: ChannelName
    /// Its place in the channel: 1, 2, 3 … with no holes within one epoch.
    public var offset: Int64
    /// Names the channel's history; it changes when that history is lost, so an
    /// offset from an older epoch is never mistaken for one of this epoch.
    public var epoch: String
    /// When the broker accepted it, in milliseconds since 1970.
    public var time: Int64
    /// The text as the sender posted it (UTF-8).
    public var data: ByteBuffer
    /// The sender's nickname, if they gave one (see ``SenderName``).
    public var name: String?
    /// The sender's identity (the id presence shows); `nil` when they proved none.
    public var from: String?
    /// Words, or a change to earlier words: for a change, `data` is the new text (an
    /// edit), the emoji (a reaction) or empty (a delete).
    public var kind: MessageKind
    /// What later changes made of it, as a history read finds it; `nil` as published.
    public var state: MessageState?

    /// Creates a message.
    public init(
        channel: ChannelName, offset: Int64, epoch: String, time: Int64, data: ByteBuffer, name: String? = nil, from: String? = nil,
        kind: MessageKind = .message, state: MessageState? = nil
    ) {
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.time = time
        self.data = data
        self.name = name
        self.from = from
        self.kind = kind
        self.state = state
    }

    /// The text of `data`.
    public var text: String { String(buffer: data) }
}

// MARK: - Envelope between instances

extension Message {
    /// The bytes published through Redis: one header line, then `data` as it is.
    ///
    ///     v2 <offset> <epoch> <time> <from> <kind>[ <name>]\n<data>
    ///
    /// `from` is `-` for a sender without an identity; `kind` is ``MessageKind/token``.
    /// A header line instead of JSON keeps `data` unescaped, so the receiving instance
    /// can put it on the wire without decoding it. The name, when there is one, is the
    /// rest of the header line: a ``SenderName`` has no line break. Version 1 (no `from`,
    /// no `kind`) is still read, from instances not yet upgraded.
    static func envelopeHeader(offset: Int64, epoch: String, time: Int64, from: String?, kind: MessageKind, name: String? = nil) -> String {
        "v2 \(offset) \(epoch) \(time) \(from ?? "-") \(kind.token)" + (name.map { " " + $0 } ?? "") + "\n"
    }

    /// Reads an envelope published through Redis.
    /// - Returns: `nil` when the bytes are not a version 1 or 2 envelope.
    public init?(channel: ChannelName, envelope: ByteBuffer) {
        guard let newline = envelope.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let headerLength = newline - envelope.readerIndex
        guard let header = envelope.getString(at: envelope.readerIndex, length: headerLength) else { return nil }
        guard let data = envelope.getSlice(at: newline + 1, length: envelope.writerIndex - newline - 1) else { return nil }
        if header.hasPrefix("v2 ") {
            let fields = header.split(separator: " ", maxSplits: 6, omittingEmptySubsequences: false)
            guard fields.count == 6 || fields.count == 7, let offset = Int64(fields[1]), let time = Int64(fields[3]), !fields[2].isEmpty,
                !fields[4].isEmpty, let kind = MessageKind(token: fields[5])
            else { return nil }
            let name = fields.count == 7 && !fields[6].isEmpty ? String(fields[6]) : nil
            let from = fields[4] == "-" ? nil : String(fields[4])
            self.init(channel: channel, offset: offset, epoch: String(fields[2]), time: time, data: data, name: name, from: from, kind: kind)
            return
        }
        let fields = header.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false)
        guard fields.count == 4 || fields.count == 5, fields[0] == "v1",
            let offset = Int64(fields[1]), let time = Int64(fields[3]), !fields[2].isEmpty
        else { return nil }
        let name = fields.count == 5 && !fields[4].isEmpty ? String(fields[4]) : nil
        self.init(channel: channel, offset: offset, epoch: String(fields[2]), time: time, data: data, name: name)
    }
}
