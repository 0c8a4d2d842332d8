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

    /// Creates a message.
    public init(channel: ChannelName, offset: Int64, epoch: String, time: Int64, data: ByteBuffer, name: String? = nil) {
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.time = time
        self.data = data
        self.name = name
    }

    /// The text of `data`.
    public var text: String { String(buffer: data) }
}

// MARK: - Envelope between instances

extension Message {
    /// The bytes published through Redis: one header line, then `data` as it is.
    ///
    ///     v1 <offset> <epoch> <time>[ <name>]\n<data>
    ///
    /// A header line instead of JSON keeps `data` unescaped, so the receiving
    /// instance can put it on the wire without decoding it. The name, when there is
    /// one, is the rest of the header line: a ``SenderName`` has no line break.
    static func envelopeHeader(offset: Int64, epoch: String, time: Int64, name: String? = nil) -> String {
        "v1 \(offset) \(epoch) \(time)" + (name.map { " " + $0 } ?? "") + "\n"
    }

    /// Reads an envelope published through Redis.
    /// - Returns: `nil` when the bytes are not a version 1 envelope.
    public init?(channel: ChannelName, envelope: ByteBuffer) {
        guard let newline = envelope.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let headerLength = newline - envelope.readerIndex
        guard let header = envelope.getString(at: envelope.readerIndex, length: headerLength) else { return nil }
        let fields = header.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false)
        guard fields.count == 4 || fields.count == 5, fields[0] == "v1",
            let offset = Int64(fields[1]), let time = Int64(fields[3]), !fields[2].isEmpty
        else { return nil }
        guard let data = envelope.getSlice(at: newline + 1, length: envelope.writerIndex - newline - 1) else { return nil }
        let name = fields.count == 5 && !fields[4].isEmpty ? String(fields[4]) : nil
        self.init(channel: channel, offset: offset, epoch: String(fields[2]), time: time, data: data, name: name)
    }
}
