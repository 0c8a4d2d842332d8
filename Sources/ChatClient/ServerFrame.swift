import NIOCore

/// One frame as a server sends it (unmasked, RFC 6455 §5.2), read in place at a receive
/// buffer's reader index: nothing is copied or allocated.
///
/// Public and `@inlinable`, not `package`: the load generator parses up to a million
/// frames a second with it, and Swift 6.3 left `@inlinable package` members out of line
/// there (a call for every `opcode`).
public struct ServerFrame {
    /// The opcode of a message's later fragments.
    @inlinable public static var continuation: UInt8 { 0x0 }
    /// The opcode of a text message.
    @inlinable public static var text: UInt8 { 0x1 }
    /// The opcode of a binary message.
    @inlinable public static var binary: UInt8 { 0x2 }
    /// The opcode of a close frame.
    @inlinable public static var close: UInt8 { 0x8 }
    /// The opcode of a ping.
    @inlinable public static var ping: UInt8 { 0x9 }
    /// The opcode of a pong.
    @inlinable public static var pong: UInt8 { 0xA }

    /// The first byte: FIN, RSV1–3 and the opcode.
    public let head: UInt8
    /// Where the payload starts in the buffer.
    public let payloadIndex: Int
    /// The payload's length in bytes.
    public let payloadLength: Int

    /// The frame is the last (or only) one of its message.
    @inlinable public var fin: Bool { head & 0x80 != 0 }
    /// RSV1: the message is compressed (permessage-deflate).
    @inlinable public var compressed: Bool { head & 0x40 != 0 }
    /// The frame's opcode, e.g. ``text``.
    @inlinable public var opcode: UInt8 { head & 0x0F }
    /// The index just past the frame.
    @inlinable public var end: Int { payloadIndex + payloadLength }

    /// The frame at `buffer`'s reader index, or `nil` until all of it has arrived.
    @inlinable
    public init?(in buffer: ByteBuffer) {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= 2 else { return nil }
        let head = buffer.getInteger(at: start, as: UInt8.self)!
        let second = buffer.getInteger(at: start + 1, as: UInt8.self)!
        var length = Int(second & 0x7F)
        var header = 2
        if length == 126 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(value)
            header = 4
        } else if length == 127 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            length = Int(value)
            header = 10
        }
        guard buffer.readableBytes >= header + length else { return nil }
        self.head = head
        payloadIndex = start + header
        payloadLength = length
    }

    /// The payload, a slice of `buffer`, which must be the buffer the frame was read from.
    @inlinable
    public func payload(in buffer: ByteBuffer) -> ByteBuffer {
        buffer.getSlice(at: payloadIndex, length: payloadLength)!
    }
}
