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

    /// Creates a message.
    public init(channel: ChannelName, offset: Int64, epoch: String, time: Int64, data: ByteBuffer) {
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.time = time
        self.data = data
    }

    /// The text of `data`.
    public var text: String { String(buffer: data) }
}

// MARK: - Envelope between instances

extension Message {
    /// The bytes published through Redis: one header line, then `data` as it is.
    ///
    ///     v1 <offset> <epoch> <time>\n<data>
    ///
    /// A header line instead of JSON keeps `data` unescaped, so the receiving
    /// instance can put it on the wire without decoding it.
    static func envelopeHeader(offset: Int64, epoch: String, time: Int64) -> String {
        "v1 \(offset) \(epoch) \(time)\n"
    }

    /// Reads an envelope published through Redis.
    /// - Returns: `nil` when the bytes are not a version 1 envelope.
    public init?(channel: ChannelName, envelope: ByteBuffer) {
        guard let newline = envelope.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let headerLength = newline - envelope.readerIndex
        guard let header = envelope.getString(at: envelope.readerIndex, length: headerLength) else { return nil }
        let fields = header.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 4, fields[0] == "v1",
            let offset = Int64(fields[1]), let time = Int64(fields[3]), !fields[2].isEmpty
        else { return nil }
        guard let data = envelope.getSlice(at: newline + 1, length: envelope.writerIndex - newline - 1) else { return nil }
        self.init(channel: channel, offset: offset, epoch: String(fields[2]), time: time, data: data)
    }
}
