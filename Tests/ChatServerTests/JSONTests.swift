import Foundation
import NIOCore
import Testing

@testable import ChatServer

@Suite("JSON strings")
struct JSONTests {
    @Test(arguments: ["", "plain", "quote \" backslash \\ slash /", "line\nbreak\r\ttab", "\u{0}\u{1}\u{1f}", "ünïcödé 😀 𝄞", String(repeating: "long ", count: 2000)])
    func roundTripsThroughAJSONParser(text: String) throws {
        var buffer = ByteBuffer()
        buffer.writeStaticString("[")
        JSON.writeString(text, into: &buffer)
        buffer.writeStaticString("]")
        let parsed = try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String]
        #expect(parsed == [text])
    }
}
