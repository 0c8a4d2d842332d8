import ChatClient
import ChatServer
import ChatTestSupport
import Logging
import NIOPosix
import Redis
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
            // A publish written in the instant Redis dies, before the server has seen the
            // connection close, may have reached it: that one is answered 504. Wait until
            // the server knows Redis is gone; from then on a publish is refused with 503.
            for _ in 0..<50 {
                if try await ChatHTTP.request("GET", port: server.port, path: "/readyz").status != 200 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            let started = ContinuousClock.now
            let during = try await ChatHTTP.send(port: server.port, data: "during", channel: channel)
            #expect(during.status == 503)
            #expect(during.body.contains("Redis is unavailable"))
            #expect(during.header("Retry-After") == "1")
            #expect(ContinuousClock.now - started < .seconds(8), "a 503 comes promptly, not after a hang (a busy machine may take a few seconds)")

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

/// Redis losing its last writes (a crash failover with asynchronous replication, or a
/// crash with `appendfsync everysec`) must not make offsets be handed out twice.
@Suite("Redis losing its last writes")
struct RedisRollbackTests {
    @Test func offsetsAreNotHandedOutAgainAfterRedisLostTheLastWrites() async throws {
        try await withServer(broker: .redis) { server in
            let channel = uniqueChannel("rollback")
            let reader = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            for number in 1...10 { #expect(try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel).body == "ok") }
            var seen: [Int] = []
            while seen.count < 10, let frame = await reader.nextText().map({ $0.jsonObject }) {
                if frame["type"] as? String == "message" { seen.append(frame["offset"] as? Int ?? -1) }
            }
            #expect(seen == Array(1...10))

            // Redis forgets offsets 8-10, as a replica promoted before it had them would.
            try await forgetWritesEightToTen(of: channel, in: try TestRedis.url())

            #expect(try await ChatHTTP.send(port: server.port, data: "after", channel: channel).body == "ok")
            let after = await nextOfType("message", reader)
            #expect(after?["data"] as? String == "after", "the new message reaches the reader, not dropped as a duplicate")
            #expect(after?["offset"] as? Int == 11, "after the highest offset this instance saw, not a reused 8")
            await reader.disconnect()
        }
    }

    @Test func anInstanceThatCatchesUpRaisesTheCounterForInstancesThatSawNothing() async throws {
        // A Redis of its own: the test drops every pub/sub connection on it.
        try await PrivateRedis.with { privateRedis in
            try await catchUpRaisesTheCounter(redisURL: privateRedis.url)
        }
    }

    /// Makes Redis forget offsets 8–10 of a channel that had 10, as a replica promoted
    /// before it had them would: the counter, the history entries and the stream's last ID.
    func forgetWritesEightToTen(of channel: String, in redisURL: String) async throws {
        let redis = try await connectToRedis(redisURL)
        defer { redis.close() }
        _ = try await redis.send(RedisCommand("HSET", .string("chatroom:{\(channel)}:meta"), "offset", "7"))
        _ = try await redis.send(RedisCommand("XDEL", .string("chatroom:{\(channel)}:history"), "8-0", "9-0", "10-0"))
        _ = try await redis.send(RedisCommand("XSETID", .string("chatroom:{\(channel)}:history"), "7-0"))
    }

    func catchUpRaisesTheCounter(redisURL: String) async throws {
        let serving = try await TestServer.start(broker: .redis) { $0.redisURL = redisURL }
        let other = try await TestServer.start(broker: .redis) { $0.redisURL = redisURL }
        let channel = uniqueChannel("rollback")
        let reader = try await ChatWebSocket.connect(port: serving.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
        for number in 1...10 { _ = try await ChatHTTP.send(port: serving.port, data: "m\(number)", channel: channel) }
        var count = 0
        while count < 10, let frame = await reader.nextText().map({ $0.jsonObject }) {
            if frame["type"] as? String == "message" { count += 1 }
        }
        try await forgetWritesEightToTen(of: channel, in: redisURL)
        let redis = try await connectToRedis(redisURL)
        // The serving instance's pub/sub connection drops (as in a failover): it
        // subscribes again and catches up from the history, which is behind.
        _ = try await redis.send(RedisCommand("CLIENT", "KILL", "TYPE", "pubsub"))
        var fenced = false
        for _ in 0..<100 where !fenced {
            try await Task.sleep(for: .milliseconds(50))
            fenced = try await redis.send(RedisCommand("HGET", .string("chatroom:{\(channel)}:meta"), "offset")).string == "10"
        }
        redis.close()
        #expect(fenced, "the counter is raised to what the serving instance delivered")
        // An instance that never saw the channel publishes: no offset is handed out twice.
        #expect(try await ChatHTTP.send(port: other.port, data: "from elsewhere", channel: channel).body == "ok")
        let after = await nextOfType("message", reader)
        #expect(after?["data"] as? String == "from elsewhere")
        #expect(after?["offset"] as? Int == 11)
        await reader.disconnect()
        await serving.stop()
        await other.stop()
    }
}
