import NIOCore
import Testing

@testable import Redis

@Suite("RESP parsing with hiredis")
struct RESPReaderTests {
    /// Every reply kind, nested arrays and nil values included.
    static let stream = "+OK\r\n-ERR wrong number of arguments\r\n:-42\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n*-1\r\n*3\r\n$7\r\nmessage\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n*0\r\n"
    static let expected: [RESPValue] = [
        .simpleString("OK"),
        .error("ERR wrong number of arguments"),
        .integer(-42),
        .bulkString(ByteBuffer(string: "he\r\no")),
        .bulkString(ByteBuffer()),
        .null,
        .null,
        .array([.bulkString(ByteBuffer(string: "message")), .array([.integer(1), .array([.bulkString(ByteBuffer(string: "x"))])]), .null]),
        .array([]),
    ]

    func parse(chunks: [String]) throws -> [RESPValue] {
        let reader = RESPReader()
        var values: [RESPValue] = []
        for chunk in chunks {
            try reader.feed(ByteBuffer(string: chunk))
            while let value = try reader.next() { values.append(value) }
        }
        return values
    }

    @Test func wholeStreamAtOnce() throws {
        #expect(try parse(chunks: [Self.stream]) == Self.expected)
    }

    @Test func byteByByte() throws {
        #expect(try parse(chunks: Self.stream.map { String($0) }) == Self.expected)
    }

    @Test(arguments: [2, 3, 5, 7, 11, 64])
    func oddChunks(size: Int) throws {
        let bytes = Array(Self.stream.utf8)
        let chunks = stride(from: 0, to: bytes.count, by: size).map { String(decoding: bytes[$0..<min($0 + size, bytes.count)], as: UTF8.self) }
        #expect(try parse(chunks: chunks) == Self.expected)
    }

    @Test func binaryBulkStringsKeepEveryByte() throws {
        let reader = RESPReader()
        var buffer = ByteBuffer(string: "$4\r\n")
        buffer.writeBytes([0, 255, 13, 10])
        buffer.writeString("\r\n")
        try reader.feed(buffer)
        #expect(try reader.next() == .bulkString(ByteBuffer(bytes: [0, 255, 13, 10])))
    }

    @Test func incompleteReplyWaitsForMore() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "$10\r\nhello"))
        #expect(try reader.next() == nil)
        try reader.feed(ByteBuffer(string: "world\r\n"))
        #expect(try reader.next() == .bulkString(ByteBuffer(string: "helloworld")))
    }

    @Test func garbageIsAProtocolError() throws {
        let reader = RESPReader()
        try? reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RedisError.self) {
            _ = try reader.next()
        }
        do {
            _ = try reader.next()
        } catch let error as RedisError {
            #expect(error.code == .protocolError)
            #expect(!error.message.isEmpty)
        }
    }
}

@Suite("RESP decoding through NIO's single-step processor")
struct RESPDecoderTests {
    func decode(chunks: [ByteBuffer]) throws -> [RESPValue] {
        let processor = NIOSingleStepByteToMessageProcessor(RESPReader())
        var values: [RESPValue] = []
        for chunk in chunks {
            try processor.process(buffer: chunk) { values.append($0) }
        }
        return values
    }

    func chunks(_ text: String, size: Int) -> [ByteBuffer] {
        let bytes = Array(text.utf8)
        return stride(from: 0, to: bytes.count, by: size).map { ByteBuffer(bytes: bytes[$0..<min($0 + size, bytes.count)]) }
    }

    @Test func manyRepliesInOneReadAllComeOut() throws {
        #expect(try decode(chunks: [ByteBuffer(string: RESPReaderTests.stream)]) == RESPReaderTests.expected)
    }

    @Test(arguments: [1, 2, 3, 5, 7, 11, 64])
    func fragmentedReplies(size: Int) throws {
        #expect(try decode(chunks: chunks(RESPReaderTests.stream, size: size)) == RESPReaderTests.expected)
    }

    @Test func aReplySplitAcrossReadsWaitsForItsEnd() throws {
        let processor = NIOSingleStepByteToMessageProcessor(RESPReader())
        var values: [RESPValue] = []
        try processor.process(buffer: ByteBuffer(string: "+OK\r\n$10\r\nhello")) { values.append($0) }
        #expect(values == [.simpleString("OK")])
        try processor.process(buffer: ByteBuffer(string: "world\r\n:1\r\n:")) { values.append($0) }
        #expect(values == [.simpleString("OK"), .bulkString(ByteBuffer(string: "helloworld")), .integer(1)])
        try processor.process(buffer: ByteBuffer(string: "2\r\n")) { values.append($0) }
        #expect(values.last == .integer(2))
    }

    @Test func garbageThrowsAProtocolError() {
        let processor = NIOSingleStepByteToMessageProcessor(RESPReader())
        #expect {
            try processor.process(buffer: ByteBuffer(string: "+OK\r\n?what\r\n")) { _ in }
        } throws: { error in
            (error as? RedisError)?.code == .protocolError
        }
    }
}
