import ChatClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The redis-server that the test command started for this run.
///
/// `scripts/test.sh` starts a private redis-server on a spare loopback port and sets
/// CHATROOM_TEST_REDIS_URL. A test that needs Redis fails — it does not skip — when the
/// variable is missing, so a run without Redis can never pass by accident.
public enum TestRedis {
    public static func url(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        guard let url = ProcessInfo.processInfo.environment["CHATROOM_TEST_REDIS_URL"], !url.isEmpty else {
            Issue.record("CHATROOM_TEST_REDIS_URL is not set: run the tests with scripts/test.sh, which starts redis-server", sourceLocation: sourceLocation)
            throw MissingRedis()
        }
        return url
    }

    /// The Redis Cluster the test command started (three primaries, three replicas):
    /// its nodes as `host:port,…`, from CHATROOM_TEST_REDIS_CLUSTER.
    public static func clusterSeeds(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        guard let seeds = ProcessInfo.processInfo.environment["CHATROOM_TEST_REDIS_CLUSTER"], !seeds.isEmpty else {
            Issue.record("CHATROOM_TEST_REDIS_CLUSTER is not set: run the tests with scripts/test.sh, which starts a Redis Cluster", sourceLocation: sourceLocation)
            throw MissingRedis()
        }
        return seeds
    }

    public struct MissingRedis: Error {}
}

/// A redis-server of the test's own, so it can be killed and started again without
/// disturbing the tests that share the test command's Redis.
///
/// Spawned with posix_spawn and reaped with waitpid: Foundation's `Process.waitUntilExit`
/// spins a run loop at full CPU when called from async code on Linux.
public final class PrivateRedis: Sendable {
    public init() {
        port = Self.freePort()
    }

    /// The server's port, kept across restarts.
    public let port: Int
    private let pid = NIOLockedValueBox<pid_t?>(nil)

    /// A port below the kernel's ephemeral range (where no client socket of the tests
    /// takes its local end) that nothing is bound to now.
    static func freePort() -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20000..<32768)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if bound == 0 { return port }
        }
        return Int.random(in: 20000..<32768)
    }

    public var url: String { "redis://127.0.0.1:\(port)" }

    public func start() async throws {
        let arguments = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--logfile", "/dev/null"]
        var cArguments = arguments.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawnp(&child, "redis-server", nil, nil, &cArguments, environ)
        guard status == 0 else { throw ChatClientError("cannot start redis-server: error \(status)") }
        pid.withLockedValue { $0 = child }
        for _ in 0..<100 {
            var status: Int32 = 0
            if waitpid(child, &status, WNOHANG) == child {
                pid.withLockedValue { $0 = nil }
                throw ChatClientError("redis-server exited at start on port \(port) (status \(status)): is the port taken?")
            }
            // Redis' own answer, not any server's that might hold the port.
            if let reply = try? await ChatHTTP.exchange(host: "127.0.0.1", port: port, bytes: ByteBuffer(string: "PING\r\nQUIT\r\n"), timeout: .seconds(2)),
                String(buffer: reply).hasPrefix("+PONG")
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChatClientError("redis-server did not start on port \(port) within 10 s")
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server: a Redis that hangs without
    /// closing its sockets.
    public func pause(_ paused: Bool) {
        guard let child = pid.withLockedValue({ $0 }) else { return }
        kill(child, paused ? SIGSTOP : SIGCONT)
    }

    /// Kills the server at once (SIGKILL, as a crash) and reaps it.
    public func stop() async {
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


extension PrivateRedis {
    /// Runs `body` with a redis-server of its own, killed afterwards, also when `body` throws.
    public static func with(_ body: (PrivateRedis) async throws -> Void) async throws {
        let redis = PrivateRedis()
        try await redis.start()
        do {
            try await body(redis)
        } catch {
            await redis.stop()
            throw error
        }
        await redis.stop()
    }
}
