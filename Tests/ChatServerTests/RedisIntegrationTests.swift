import ChatClient
import ChatServer
import Logging
import Testing

/// Several instances on one real redis-server.
@Suite("Instances through Redis")
struct RedisIntegrationTests {
    @Test func aMessagePostedToOneInstanceReachesTheOthersSocketsOfThatChannelOnly() async throws {
        try await withServer(broker: .redis) { a in
            try await withServer(broker: .redis) { b in
                let channel = uniqueChannel()
                let onB = try await ChatWebSocket.connect(port: b.port, headers: [("Cookie", "channel=\(channel)")])
                let alsoOnA = try await ChatWebSocket.connect(port: a.port, headers: [("Cookie", "channel=\(channel)")])
                let otherOnB = try await ChatWebSocket.connect(port: b.port, headers: [("Cookie", "channel=\(uniqueChannel())")])
                #expect(try await ChatHTTP.send(port: a.port, data: "from A", channel: channel).body == "ok")
                #expect(await onB.nextText() == "from A")
                #expect(await alsoOnA.nextText() == "from A")
                #expect(try await ChatHTTP.send(port: b.port, data: "from B", channel: channel).body == "ok")
                #expect(await onB.nextText() == "from B")
                #expect(await alsoOnA.nextText() == "from B")
                #expect(await otherOnB.nextText(timeout: .milliseconds(300)) == nil)
            }
        }
    }

    @Test func offsetsAreSharedAcrossInstances() async throws {
        try await withServer(broker: .redis) { a in
            try await withServer(broker: .redis) { b in
                let channel = uniqueChannel()
                let socket = try await ChatWebSocket.connect(port: b.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
                for (index, server) in [a, b, a, b].enumerated() {
                    #expect(try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel).body == "ok")
                }
                var offsets: [Int] = []
                for _ in 0..<4 { offsets.append(try #require(await socket.nextText()).jsonObject["offset"] as? Int ?? -1) }
                #expect(offsets == [1, 2, 3, 4])
            }
        }
    }

    @Test func unreachableRedisAtStartIsOneClearError() async throws {
        var configuration = ChatConfiguration()
        configuration.port = 0
        configuration.redisURL = "redis://127.0.0.1:1"
        do {
            _ = try await buildApplication(configuration, logger: Logger(label: "test"))
            Issue.record("started without Redis")
        } catch let error as StartupError {
            #expect(error.message.contains("redis://127.0.0.1:1"))
            #expect(error.message.contains("--broker memory"))
            #expect(!error.message.contains("\n"))
        }
    }

    @Test func invalidRedisURLIsRefusedAtStart() async throws {
        var configuration = ChatConfiguration()
        configuration.redisURL = "http://nope"
        await #expect(throws: StartupError.self) {
            _ = try await buildApplication(configuration, logger: Logger(label: "test"))
        }
    }
}
