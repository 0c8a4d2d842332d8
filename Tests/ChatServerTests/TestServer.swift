import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Redis
import NIOPosix
import Testing

/// A running `chatroom` on a free loopback port, in this process.
final class TestServer: Sendable {
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Starts a server; `configure` adjusts the configuration (broker, limits…).
    static func start(
        broker: ChatConfiguration.BrokerKind,
        logs: LogCapture? = nil,
        _ configure: (inout ChatConfiguration) -> Void = { _ in }
    ) async throws -> TestServer {
        var configuration = ChatConfiguration()
        configuration.port = 0
        configuration.broker = broker
        if broker == .redis { configuration.redisURL = try TestRedis.url() }
        // Tests publish quickly from one address: limits are off unless a test sets them.
        configuration.sendRate = nil
        configuration.historyRate = nil
        configuration.socketMessageRate = nil
        configuration.newChannelRate = nil
        // Presence frames would interleave with what tests count: off unless a test sets it.
        configuration.presenceInterval = .seconds(3600)
        // Shared by every test server, so that tests can mint identities (see `Person`).
        configuration.identitySecret = Person.secret
        configure(&configuration)
        var logger = Logger(label: "test-server") { label in
            let stream = StreamLogHandler.standardError(label: label)
            return logs.map { MultiplexLogHandler([$0, stream]) } ?? stream
        }
        logger.logLevel = ProcessInfo.processInfo.environment["CHATROOM_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        if logs != nil { logger.logLevel = min(logger.logLevel, .info) }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = try await buildApplication(configuration, logger: logger) { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
        }
        let group = ServiceGroup(services: [application], logger: logger)
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw TestServerError() }
        return TestServer(port: port, group: group, task: task)
    }

    /// Shuts down gracefully, as on SIGTERM, and waits until it has.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }

    struct TestServerError: Error {}
}

/// Runs `body` with a server and stops the server afterwards, also when `body` throws.
func withServer(
    broker: ChatConfiguration.BrokerKind,
    logs: LogCapture? = nil,
    _ configure: (inout ChatConfiguration) -> Void = { _ in },
    _ body: (TestServer) async throws -> Void
) async throws {
    let server = try await TestServer.start(broker: broker, logs: logs, configure)
    do {
        try await body(server)
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
}

/// A fresh channel name so tests sharing one Redis never see each other's messages.
func uniqueChannel(_ prefix: String = "t") -> String {
    "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
}

/// Keeps the server's log lines (info and above) so a test can check what was logged.
final class LogCapture: LogHandler, @unchecked Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        lines.withLockedValue { $0.append("\(event.level) \(event.message) \(fields.joined(separator: " "))") }
    }

    /// Lines logged so far that contain `text`.
    func lines(containing text: String) -> [String] {
        lines.withLockedValue { $0.filter { $0.contains(text) } }
    }
}

/// The close code a socket receives next (`nil` if it is dropped without one).
/// The close code the server sent, or `nil` if the socket ended without one. Waits up to
/// 5 s for each event, or at most `within` in all.
func closeCode(of socket: ChatWebSocket, within: Duration? = nil) async -> UInt16? {
    let deadline = within.map { ContinuousClock.now + $0 }
    while true {
        let wait = deadline.map { $0 - ContinuousClock.now } ?? .seconds(5)
        guard wait > .zero, let event = await socket.next(timeout: wait) else { return nil }
        switch event {
        case .close(let code, _): return code
        case .disconnected: return nil
        default: continue
        }
    }
}

/// A browser's identity for tests: a `uid` cookie signed with the test servers' secret.
struct Person {
    static let secret = "test-identity-secret"
    let id: String
    let cookie: String

    init() {
        (id, cookie) = Identities(secret: Person.secret).mint()
    }

    /// The `Cookie` header to send.
    var header: (String, String) { ("Cookie", "uid=\(cookie)") }
}

/// A connection of the test's own to Redis, to look at or change what servers keep there.
func connectToRedis(_ url: String? = nil) async throws -> RedisConnection {
    try await RedisConnection.connect(
        configuration: RedisConfiguration(url: url ?? TestRedis.url()), eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "test")
    )
}

/// Puts a person in a room as an instance that crashed would leave them: a lease in Redis
/// that nobody renews, ending `lifetime` from now by Redis' clock.
func plantCrashedLease(channel: String, id: String, name: String? = nil, lifetime: Duration) async throws {
    let redis = try await connectToRedis()
    defer { redis.close() }
    let time = try await redis.send(RedisCommand("TIME")).array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
    let now = (time.first ?? 0) * 1000 + (time.last ?? 0) / 1000
    if let name {
        // The name first: the lease makes them count.
        _ = try await redis.send(RedisCommand("HSET", .string("chatroom:{\(channel)}:names"), .string(id), .string(name)))
    }
    _ = try await redis.send(RedisCommand("ZADD", .string("chatroom:{\(channel)}:leases"), .integer(now + Int64(lifetime / .milliseconds(1))), .string("crashed|\(id)")))
}
