import ChatClient
import ChatServer
import ChatTestSupport
import Testing

@Suite("Health and readiness")
struct HealthTests {
    @Test func theMemoryBrokerIsAlwaysReady() async throws {
        try await withServer(broker: .memory) { server in
            let health = try await ChatHTTP.request("GET", port: server.port, path: "/healthz")
            #expect(health.status == 200 && health.body == "ok\n")
            let ready = try await ChatHTTP.request("GET", port: server.port, path: "/readyz")
            #expect(ready.status == 200 && ready.body == "ready\n")
        }
    }

    @Test func readinessFollowsRedis() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                let channel = uniqueChannel()
                let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
                #expect(try await ChatHTTP.request("GET", port: server.port, path: "/readyz").status == 200)

                await redis.stop()
                var down: HTTPResult?
                for _ in 0..<100 {
                    down = try await ChatHTTP.request("GET", port: server.port, path: "/readyz")
                    if down?.status == 503 { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(down?.status == 503)
                #expect(down?.body.hasPrefix("not ready: ") == true)
                #expect(try await ChatHTTP.request("GET", port: server.port, path: "/healthz").status == 200, "alive all the same")

                try await redis.start()
                var up: HTTPResult?
                for _ in 0..<150 {
                    up = try await ChatHTTP.request("GET", port: server.port, path: "/readyz")
                    if up?.status == 200 { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(up?.body == "ready\n", "ready once both connections are back and the channel is subscribed again")
                await socket.disconnect()
            }
        }
    }
}

@Suite("Status page")
struct StatusPageTests {
    @Test func showsTheInstanceItsBrokerItsSocketsAndTheMessageRate() async throws {
        // On the chat's port only with the publish token (the metrics listener needs none).
        try await withServer(broker: .memory, { $0.publishToken = "operator" }) { server in
            let channel = uniqueChannel()
            let sockets = try await (0..<3).asyncMap { _ in try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)") }
            for number in 1...5 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel, headers: [("Authorization", "Bearer operator")]) }
            // The rate shows whole seconds: wait for the current one to end.
            try await Task.sleep(for: .milliseconds(1100))
            let page = try await ChatHTTP.request("GET", port: server.port, path: "/status", headers: [("Authorization", "Bearer operator")])
            #expect(page.status == 200)
            #expect(page.header("content-type") == "text/html; charset=utf-8")
            #expect(page.body.contains(#"<dd id="broker">memory"#))
            #expect(page.body.contains(#"<dd id="state" class="ready">ready</dd>"#))
            #expect(page.body.contains(#"<dd id="sockets">3 in 1 channel(s)</dd>"#))
            #expect(page.body.contains("<tr><td>\(channel)</td><td class=\"number\">3</td></tr>"))
            let secondsWithMessages = page.body.contains("peak 5/s") || page.body.contains("average 0.1/s")
            #expect(secondsWithMessages, "the five messages show in the last minute's rate")
            for socket in sockets { await socket.disconnect() }
        }
    }
}
