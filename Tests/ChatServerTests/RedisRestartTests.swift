import ChatClient
import ChatServer
import ChatTestSupport
import Testing

@Suite("Redis restarts")
struct RedisRestartTests {
    @Test func publishingAnswers503WhileRedisIsDownAndSocketsResumeAfter() async throws {
        try await PrivateRedis.with { redis in try await run(with: redis) }
    }

    func run(with redis: PrivateRedis) async throws {
        try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            #expect(try await ChatHTTP.send(port: server.port, data: "before", channel: channel).body == "ok")
            #expect(await socket.nextText() == "before")

            await redis.stop()
            let started = ContinuousClock.now
            let during = try await ChatHTTP.send(port: server.port, data: "during", channel: channel)
            #expect(during.status == 503)
            #expect(during.body.contains("Redis is unavailable"))
            #expect(during.header("Retry-After") == "1")
            #expect(ContinuousClock.now - started < .seconds(3), "a 503 comes promptly, not after a hang")

            try await redis.start()
            var after: HTTPResult?
            for _ in 0..<100 {
                after = try await ChatHTTP.send(port: server.port, data: "after", channel: channel)
                if after?.status == 200 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(after?.body == "ok")
            // The socket stayed open, the instance subscribed again, and delivery resumed.
            #expect(await socket.nextText(timeout: .seconds(10)) == "after")
        }
    }
}
