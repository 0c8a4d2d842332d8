import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import ChatServer

@Suite("JSON log lines")
struct JSONLogTests {
    @Test func eachLineIsOneJSONObjectWithTheMetadataAsFields() throws {
        let lines = NIOLockedValueBox<[String]>([])
        var handler = LogLineHandler(label: "chatroom", format: .json) { line in lines.withLockedValue { $0.append(line) } }
        handler.metadata = ["instance": "a"]
        var logger = Logger(label: "chatroom", factory: { _ in handler })
        logger.logLevel = .debug
        logger.info("Refused a message", metadata: ["status": "429", "reason": "quote \" and\nnewline", "level": "spoofed"])
        let written = lines.withLockedValue { $0 }
        #expect(written.count == 1)
        #expect(written[0].hasSuffix("}\n"))
        let object = try #require(JSONSerialization.jsonObject(with: Data(written[0].utf8)) as? [String: String])
        #expect(object["level"] == "info", "metadata cannot overwrite the line's own fields")
        #expect(object["message"] == "Refused a message")
        #expect(object["label"] == "chatroom")
        #expect(object["status"] == "429")
        #expect(object["reason"] == "quote \" and\nnewline")
        #expect(object["instance"] == "a")
        #expect(object["time"]?.hasSuffix("Z") == true)
    }
}
