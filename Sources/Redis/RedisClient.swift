import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Learns that a connection went up (`connected`) or down; `isReconnect` marks an up
/// that is not the first.
public typealias RedisStateHandler = @Sendable (_ connected: Bool, _ isReconnect: Bool) -> Void

/// A Redis client that keeps one pipelined connection open and reconnects when it drops.
///
/// Run it as a `Service`: ``run()`` reconnects with ``Backoff`` until graceful shutdown.
/// While no connection is up, ``send(_:)`` fails at once with `.unavailable`, so a
/// caller can answer its own client promptly instead of queueing behind an outage.
public final class RedisClient: Service, Sendable {
    /// Where Redis is.
    public let configuration: RedisConfiguration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connection: RedisConnection?
        var isShutdown = false
        var onConnect: [@Sendable (RedisConnection) async -> Void] = []
        var onStateChange: [RedisStateHandler] = []
        var hasConnected = false
    }

    /// Creates a client; nothing connects until ``connect()`` or ``run()``.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// Whether a command connection is up now.
    public var isConnected: Bool { state.withLockedValue { $0.connection != nil } }

    /// Registers work to do on every new connection (e.g. loading scripts), before it serves commands.
    public func onConnect(_ action: @escaping @Sendable (RedisConnection) async -> Void) {
        state.withLockedValue { $0.onConnect.append(action) }
    }

    /// Registers a handler told each time the connection goes up or down.
    public func onStateChange(_ handler: @escaping RedisStateHandler) {
        state.withLockedValue { $0.onStateChange.append(handler) }
    }

    /// Connects once; fails if Redis cannot be reached. Used at start to refuse to run without Redis.
    public func connect() async throws {
        _ = try await establish()
    }

    /// Sends a command on the current connection.
    /// - Throws: ``RedisError``; `.unavailable` at once while reconnecting.
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        guard let connection = state.withLockedValue({ $0.connection }) else {
            throw RedisError(.unavailable, "not connected to Redis at \(configuration); reconnecting")
        }
        return try await connection.send(command)
    }

    /// Sends `command` without a task: the future fails as ``send(_:)`` throws. It
    /// completes on the connection's event loop (``eventLoop``).
    public func sendFuture(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        guard let connection = state.withLockedValue({ $0.connection }) else {
            return eventLoop.makeFailedFuture(RedisError(.unavailable, "not connected to Redis at \(configuration); reconnecting"))
        }
        return connection.sendChecked(command)
    }

    /// The loop the client's connections run on.
    public var loop: any EventLoop { eventLoop }

    /// Sends `ASKING` and then `command` on the current connection (a cluster's ASK redirection).
    public func sendAsking(_ command: RedisCommand) async throws -> RESPValue {
        guard let connection = state.withLockedValue({ $0.connection }) else {
            throw RedisError(.unavailable, "not connected to Redis at \(configuration); reconnecting")
        }
        return try await connection.sendAsking(command)
    }

    /// Waits until a connection is up, at most `timeout`; whether one is.
    public func waitUntilConnected(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isConnected {
            guard ContinuousClock.now < deadline, !state.withLockedValue({ $0.isShutdown }) else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Keeps the connection up until graceful shutdown.
    public func run() async throws {
        var loop = ReconnectLoop(
            logger: logger,
            metadata: ["redis": "\(configuration)"],
            messages: .init(up: "Connected to Redis", unreachable: "Cannot reach Redis; retrying", lost: "Lost the connection to Redis; reconnecting")
        )
        await loop.run(
            current: {
                state.withLockedValue { state in
                    if state.isShutdown { return .stopped }
                    return state.connection.map { .open($0) } ?? .none
                }
            },
            connect: { try await establish() },
            awaitClose: { connection in
                try? await connection.closeFuture.get()
                let (shuttingDown, handlers) = state.withLockedValue { state in
                    if state.connection === connection { state.connection = nil }
                    return (state.isShutdown, state.onStateChange)
                }
                for handler in handlers { handler(false, false) }
                return shuttingDown ? .stop : .reconnect
            },
            onGracefulShutdown: { self.shutdown() }
        )
    }

    /// Closes the connection and stops reconnecting.
    public func shutdown() {
        let connection = state.withLockedValue { state in
            state.isShutdown = true
            return state.connection
        }
        connection?.close()
    }

    private func establish() async throws -> RedisConnection {
        let connection = try await RedisConnection.connect(configuration: configuration, eventLoop: eventLoop, logger: logger)
        for action in state.withLockedValue({ $0.onConnect }) {
            await action(connection)
        }
        let accepted = state.withLockedValue { state -> (reconnect: Bool, handlers: [RedisStateHandler])? in
            guard !state.isShutdown else { return nil }
            state.connection = connection
            defer { state.hasConnected = true }
            return (state.hasConnected, state.onStateChange)
        }
        guard let accepted else {
            connection.close()
            throw RedisError(.shutdown, "the Redis client is shut down")
        }
        for handler in accepted.handlers { handler(true, accepted.reconnect) }
        return connection
    }
}
