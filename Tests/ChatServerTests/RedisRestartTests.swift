import ChatClient
import ChatServer
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// A redis-server of the test's own, so it can be killed and started again without
/// disturbing the tests that share the test command's Redis.
///
/// Spawned with posix_spawn and reaped with waitpid: Foundation's `Process.waitUntilExit`
/// spins a run loop at full CPU when called from async code on Linux.
final class PrivateRedis: Sendable {
    let port = Int.random(in: 20000...50000)
    private let pid = NIOLockedValueBox<pid_t?>(nil)

    var url: String { "redis://127.0.0.1:\(port)" }

    func start() async throws {
        let arguments = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--logfile", "/dev/null"]
        var cArguments = arguments.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawnp(&child, "redis-server", nil, nil, &cArguments, environ)
        guard status == 0 else { throw ChatClientError("cannot start redis-server: error \(status)") }
        pid.withLockedValue { $0 = child }
        for _ in 0..<50 {
            if (try? await ChatHTTP.exchange(host: "127.0.0.1", port: port, bytes: ByteBuffer(string: "PING\r\nQUIT\r\n"), timeout: .seconds(1))) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChatClientError("redis-server did not start on port \(port)")
    }

    /// Kills the server at once (SIGKILL, as a crash) and reaps it.
    func stop() async {
        guard let child = pid.withLockedValue({ value -> pid_t? in
            defer { value = nil }
            return value
        }) else { return }
        kill(child, SIGKILL)
        var status: Int32 = 0
        while waitpid(child, &status, WNOHANG) == 0 {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

@Suite("Redis restarts")
struct RedisRestartTests {
    @Test func publishingAnswers503WhileRedisIsDownAndSocketsResumeAfter() async throws {
        let redis = PrivateRedis()
        try await redis.start()
        do {
            try await run(with: redis)
        } catch {
            await redis.stop()
            throw error
        }
        await redis.stop()
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
