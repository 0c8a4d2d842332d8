import ChatClient
import ChatServer
import ChatTestSupport
import Foundation
import Testing

@Suite("Metrics")
struct MetricsTests {
    @Test func countsWhatHappensAndWhatIsOpen() async throws {
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel()
            let first = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            let second = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            for number in 1...3 {
                #expect(try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel).body == "ok")
            }
            for socket in [first, second] {
                for number in 1...3 { #expect(await socket.nextText() == "m\(number)") }
            }
            #expect(try await ChatHTTP.send(port: server.port, data: nil, channel: channel).status == 400)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/wb/?channel=bad%20name", headers: [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ]).status == 400)

            let scrape = try await ChatHTTP.request("GET", port: server.port, path: "/metrics")
            #expect(scrape.status == 200)
            #expect(scrape.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
            let metrics = Scrape(scrape.body)
            #expect(metrics["chatroom_websockets_open"] == 2)
            #expect(metrics["chatroom_channels_served"] == 1)
            #expect(metrics["chatroom_messages_published_total"] == 3)
            #expect(metrics["chatroom_messages_delivered_total"] == 6)
            #expect(metrics["chatroom_publish_duration_seconds_count"] == 3)
            #expect(metrics[#"chatroom_refusals_total{route="/send/",reason="bad_request"}"#] == 1)
            #expect(metrics[#"chatroom_refusals_total{route="/wb/",reason="bad_request"}"#] == 1)
            #expect((metrics["chatroom_connections_open"] ?? 0) >= 2)
            await first.disconnect()
            await second.disconnect()
        }
    }

    @Test func countsSlowReadersAndSocketRefusals() async throws {
        // A reader that stops reading also stops answering pings: keep the heartbeat out of the way.
        try await withServer(broker: .memory, { $0.socketQueueLimit = 4096; $0.pingInterval = .seconds(300) }) { server in
            let channel = uniqueChannel()
            // A reader of the original protocol that stops reading is closed as too slow.
            // A small receive buffer: the kernel's buffers fill after a few messages.
            let slow = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", receiveBufferSize: 4096)
            try await slow.setReading(false)
            let text = String(repeating: "x", count: 16 * 1024)
            var overflowed = false
            for round in 0..<400 where !overflowed {
                _ = try await ChatHTTP.send(port: server.port, data: text, channel: channel)
                guard round % 8 == 7 else { continue }
                let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
                overflowed = metrics[#"chatroom_queue_overflows_total{protocol="original"}"#] == 1
            }
            #expect(overflowed)
            let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
            #expect((metrics[#"chatroom_messages_dropped_total{reason="slow_reader"}"#] ?? 0) >= 1)
            #expect(metrics[#"chatroom_refusals_total{route="socket",reason="slow_reader"}"#] == 1)
            await slow.disconnect()

            let binary = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            try await binary.sendFrame(opcode: 0x2, payload: [1, 2, 3])
            #expect(await closeCode(of: binary) == 1003)
            let after = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
            #expect(after[#"chatroom_refusals_total{route="socket",reason="binary"}"#] == 1)
        }
    }

    @Test func aSeparatePortServesMetricsInstead() async throws {
        // Port 0: the kernel picks a free one, and the server's log line says which. A port
        // guessed at random can be taken by another test's Redis, and the server then stops.
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, { $0.metricsPort = 0 }) { server in
            var metricsPort: Int?
            for _ in 0..<100 where metricsPort == nil {
                metricsPort = logs.lines(containing: "Metrics address=").first
                    .flatMap { $0.split(separator: " ").first { $0.hasPrefix("address=") } }
                    .flatMap { $0.split(separator: ":").last }
                    .flatMap { Int($0) }
                if metricsPort == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            let port = try #require(metricsPort, "the metrics listener logs its address")
            #expect(port != server.port)
            let scrape = try await ChatHTTP.request("GET", port: port, path: "/metrics")
            #expect(scrape.status == 200)
            #expect(Scrape(scrape.body)["chatroom_websockets_open"] == 0)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").status == 404, "not on the chat's port")
        }
    }

    @Test func showsTheRedisConnectionsAndTheirReconnects() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                let command = #"chatroom_redis_connected{connection="command",node="\#(redis.url)"}"#
                let pubsub = #"chatroom_redis_connected{connection="pubsub",node="\#(redis.url)"}"#
                let reconnects = #"chatroom_redis_reconnects_total{connection="command",node="\#(redis.url)"}"#
                var metrics = try await Self.waitFor(port: server.port) { $0[command] == 1 && $0[pubsub] == 1 }
                #expect(metrics[command] == 1 && metrics[pubsub] == 1)
                #expect(metrics[reconnects] == nil, "no reconnect yet")

                await redis.stop()
                metrics = try await Self.waitFor(port: server.port) { $0[command] == 0 && $0[pubsub] == 0 }
                #expect(metrics[command] == 0 && metrics[pubsub] == 0)
                #expect(try await ChatHTTP.send(port: server.port, data: "lost?", channel: uniqueChannel()).status == 503)

                try await redis.start()
                metrics = try await Self.waitFor(port: server.port, attempts: 150) { $0[command] == 1 && $0[pubsub] == 1 }
                #expect(metrics[command] == 1 && metrics[pubsub] == 1)
                #expect(metrics[reconnects] == 1)
                #expect(metrics[#"chatroom_refusals_total{route="/send/",reason="unavailable"}"#] == 1)
            }
        }
    }

    /// Scrapes until `done` holds or the attempts (100 ms apart) run out; returns the last scrape.
    static func waitFor(port: Int, attempts: Int = 100, _ done: (Scrape) -> Bool) async throws -> Scrape {
        var last = Scrape("")
        for _ in 0..<attempts {
            last = Scrape(try await ChatHTTP.request("GET", port: port, path: "/metrics").body)
            if done(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        return last
    }
}

/// One scrape in Prometheus' text format: each series (name and labels, as printed) to its value.
struct Scrape {
    let values: [String: Double]

    init(_ text: String) {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        self.values = values
    }

    subscript(series: String) -> Double? { values[series] }
}
