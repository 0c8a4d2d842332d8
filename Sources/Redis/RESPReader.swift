internal import CHiredis
import NIOCore

/// Parses RESP bytes from Redis into ``RESPValue``s with hiredis' reader.
///
/// Bytes may arrive in any chunks: ``feed(_:)`` them as they come and call
/// ``next()`` until it returns `nil`; or let a `NIOSingleStepByteToMessageProcessor`
/// drive it as a decoder. The hiredis reader is owned by this object and freed with it;
/// it never leaves this class.
public final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    /// Creates a reader with an empty buffer.
    public init() {
        guard let reader = redisReaderCreate() else {
            fatalError("hiredis could not allocate a reader (out of memory)")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Appends bytes received from Redis.
    public func feed(_ bytes: ByteBuffer) throws {
        let status = bytes.withUnsafeReadableBytes { raw -> Int32 in
            guard let base = raw.baseAddress, raw.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), raw.count)
        }
        if status != REDIS_OK { throw protocolError() }
    }

    /// The next complete reply, or `nil` when more bytes are needed.
    public func next() throws -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw protocolError() }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
    }

    private func protocolError() -> RedisError {
        let text = withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return RedisError(.protocolError, text.isEmpty ? "invalid RESP from Redis" : text)
    }

    private static func value(of reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(ByteBuffer(bytes: UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .simpleString(text(r))
        case REDIS_REPLY_ERROR:
            return .error(text(r))
        case REDIS_REPLY_INTEGER:
            return .integer(r.integer)
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(r.elements)
            for index in 0..<r.elements {
                elements.append(value(of: r.element[index]!))
            }
            return .array(elements)
        default:  // REDIS_REPLY_NIL
            return .null
        }
    }

    private static func text(_ r: redisReply) -> String {
        String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self)
    }
}

// MARK: - As a decoder

extension RESPReader: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    /// The next reply from the bytes fed so far and those in `buffer`.
    ///
    /// hiredis keeps the bytes it was fed, so they leave `buffer` as they go into it.
    /// One byte stays behind while replies parsed earlier remain: the processor calls
    /// again only while `buffer` has bytes, and one byte completes at most one reply.
    public func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        if let value = try next() { return value }
        if buffer.readableBytes > 1, let head = buffer.readSlice(length: buffer.readableBytes - 1) {
            try feed(head)
            if let value = try next() { return value }
        }
        guard let last = buffer.readSlice(length: buffer.readableBytes), last.readableBytes > 0 else { return nil }
        try feed(last)
        return try next()
    }

    /// As ``decode(buffer:)``: an incomplete reply at the end of the stream is dropped.
    public func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }
}
