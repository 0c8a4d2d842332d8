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
