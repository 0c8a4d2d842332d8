import Logging
import NIOCore
import ServiceLifecycle

/// One pub/sub connection per instance, shared by every local listener.
///
/// Subscriptions are reference counted: the first ``subscribe(_:)`` of a channel sends
/// `SUBSCRIBE`, the last matching ``unsubscribe(_:)`` sends `UNSUBSCRIBE`, so the
/// instance receives only the channels it serves. When the connection drops, ``run()``
/// reconnects with ``Backoff`` and subscribes every channel still referenced.
///
/// All state lives on one event loop; public methods hop onto it, so commands reach
/// Redis in the order the reference counts changed.
///
/// In ``Mode/sharded`` it speaks Redis 7's sharded pub/sub (SSUBSCRIBE) to one node of a
/// cluster; ``RedisShardedSubscriber`` keeps one per primary and moves channels between
/// them when the cluster's slots move.
public final class RedisSubscriber: Service, @unchecked Sendable {
    /// Plain pub/sub, or sharded pub/sub on one cluster node.
    public enum Mode: Sendable {
        case classic
        case sharded
    }
    /// A message received on a subscribed channel.
    public struct Message: Sendable {
        /// The pub/sub channel it was published to.
        public var channel: String
        /// The published bytes.
        public var payload: ByteBuffer
    }

    /// Receives messages, a batch per read from the socket, on the subscriber's event loop.
    public typealias MessageHandler = @Sendable ([Message]) -> Void
    /// Learns of each new connection with the channels it subscribed, once Redis confirmed them.
    public typealias ResubscribeHandler = @Sendable ([String]) -> Void

    /// Where Redis is.
    public let configuration: RedisConfiguration
    /// The event loop that owns this subscriber's state.
    public let eventLoop: any EventLoop
    private let logger: Logger
    private let onMessages: MessageHandler
    private let pingInterval: TimeAmount

    // Confined to `eventLoop`.
    private var channel: (any Channel)?
    private var references: [String: Int] = [:]
    private var repliesPending: [String: Int] = [:]
    private var confirmed: Set<String> = []
    private var waiters: [String: [EventLoopPromise<Void>]] = [:]
    private var batch: [Message] = []
    private var pingSentAt: NIODeadline?
    private var pingTask: RepeatedTask?
    private var isShutdown = false
    private var onResubscribe: ResubscribeHandler?
    private var resubscribing: Set<String> = []
    private var onStateChange: RedisStateHandler?
    private var hasConnected = false
    private let mode: Mode
    /// Sharded: channels the node unsubscribed by itself (its slot moved away).
    var onLost: (([String]) -> Void)?
    /// Sharded: the node answered MOVED to a subscription (slot, new owner's `host:port`).
    var onMoved: ((Int, String) -> Void)?

    /// Creates a subscriber; it connects in ``connect()`` or ``run()``.
    public init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger,
        pingInterval: Duration = .seconds(3),
        mode: Mode = .classic,
        onMessages: @escaping MessageHandler
    ) {
        self.mode = mode
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessages = onMessages
        self.pingInterval = TimeAmount(pingInterval)
    }

    /// Sets the handler told about the channels subscribed again after a reconnect.
    public func onResubscribe(_ handler: @escaping ResubscribeHandler) {
        eventLoop.execute { self.onResubscribe = handler }
    }

    /// Sets the handler told each time the pub/sub connection goes up or down.
    public func onStateChange(_ handler: @escaping RedisStateHandler) {
        eventLoop.execute { self.onStateChange = handler }
    }

    /// Adds a reference to `name`; the future completes once Redis confirmed the subscription.
    ///
    /// Each call must be balanced by one ``unsubscribe(_:)``, also when the future fails.
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { self.subscribeNow(name) }
    }

    /// Drops a reference to `name`; the last one unsubscribes.
    public func unsubscribe(_ name: String) {
        eventLoop.execute { self.unsubscribeNow(name) }
    }

    /// ``subscribe(_:)``, already on the event loop.
    func subscribeNow(_ name: String) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let count = references[name, default: 0] + 1
        references[name] = count
        guard let channel else {
            return eventLoop.makeFailedFuture(RedisError(.unavailable, "no pub/sub connection to Redis at \(configuration); reconnecting"))
        }
        if confirmed.contains(name) && repliesPending[name, default: 0] == 0 {
            return eventLoop.makeSucceededVoidFuture()
        }
        if count == 1 {
            send(RedisCommand(subscribeCommand, .string(name)), on: channel, counting: [name])
        }
        let promise = eventLoop.makePromise(of: Void.self)
        waiters[name, default: []].append(promise)
        return promise.futureResult
    }

    /// ``unsubscribe(_:)``, already on the event loop.
    func unsubscribeNow(_ name: String) {
        eventLoop.preconditionInEventLoop()
        guard let count = references[name] else { return }
        if count > 1 {
            references[name] = count - 1
            return
        }
        references[name] = nil
        confirmed.remove(name)
        failWaiters(of: name, with: RedisError(.shutdown, "unsubscribed from \(name) before Redis confirmed it"))
        if let channel {
            send(RedisCommand(mode == .sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", .string(name)), on: channel, counting: [name])
        }
    }

    /// The channels with at least one reference.
    public var subscribedChannels: EventLoopFuture<Set<String>> {
        eventLoop.submit { Set(self.references.keys) }
    }

    /// Why messages may not be arriving now, or `nil` when the connection is up and Redis
    /// has confirmed every subscription.
    public var notReadyReason: EventLoopFuture<String?> {
        eventLoop.submit {
            guard self.channel != nil else { return "no pub/sub connection to Redis (reconnecting)" }
            let waiting = Set(self.references.keys).subtracting(self.confirmed)
            return waiting.isEmpty ? nil : "Redis has not confirmed \(waiting.count) subscription(s) yet"
        }
    }

    /// Opens the pub/sub connection once; fails if Redis cannot be reached.
    public func connect() async throws {
        _ = try await establish()
    }

    /// Keeps the pub/sub connection up until graceful shutdown.
    public func run() async throws {
        var backoff = Backoff()
        await withGracefulShutdownHandler {
            while !Task.isCancelled {
                let current = try? await eventLoop.submit { (self.channel, self.isShutdown) }.get()
                if current?.1 ?? true { break }
                let channel: any Channel
                if let open = current?.0 {
                    channel = open
                } else {
                    do {
                        channel = try await establish()
                        logger.info("Pub/sub connection to Redis is up", metadata: ["redis": "\(configuration)"])
                    } catch {
                        let delay = backoff.next()
                        logger.warning(
                            "Cannot reach Redis for pub/sub; retrying",
                            metadata: ["redis": "\(configuration)", "error": "\(error)", "retry_in": "\(delay)"]
                        )
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                        continue
                    }
                }
                backoff.reset()
                try? await channel.closeFuture.get()
                let stopping = (try? await eventLoop.submit { self.isShutdown }.get()) ?? true
                if stopping { break }
                logger.warning("Lost the pub/sub connection to Redis; reconnecting", metadata: ["redis": "\(configuration)"])
                let delay = backoff.next()
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    /// Closes the connection and stops reconnecting.
    public func shutdown() {
        eventLoop.execute {
            self.isShutdown = true
            self.pingTask?.cancel()
            self.channel?.close(promise: nil)
        }
    }

    // MARK: - Connection

    private func establish() async throws -> any Channel {
        let channel = try await RedisConnection.bootstrap(configuration: configuration, eventLoop: eventLoop) { channel in
            try channel.pipeline.syncOperations.addHandler(RedisPubSubHandler(subscriber: self))
        }
        try await eventLoop.submit {
            guard !self.isShutdown else {
                channel.close(promise: nil)
                throw RedisError(.shutdown, "the Redis subscriber is shut down")
            }
            self.attach(channel)
        }.get()
        return channel
    }

    private func attach(_ channel: any Channel) {
        self.channel = channel
        onStateChange?(true, hasConnected)
        hasConnected = true
        for command in configuration.handshake where command.description == "AUTH" {
            channel.write(command, promise: nil)
        }
        let names = Array(references.keys)
        resubscribing = Set(names)
        switch mode {
        case .classic where !names.isEmpty:
            send(RedisCommand("SUBSCRIBE", names.map { .string($0) }), on: channel, counting: names)
        case .sharded:
            // One SSUBSCRIBE may name channels of one slot only.
            for name in names { send(RedisCommand("SSUBSCRIBE", .string(name)), on: channel, counting: [name]) }
        default:
            break
        }
        channel.flush()
        pingTask?.cancel()
        pingTask = eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { [weak self] _ in
            self?.checkLiveness()
        }
    }

    private func send(_ command: RedisCommand, on channel: any Channel, counting names: [String]) {
        for name in names { repliesPending[name, default: 0] += 1 }
        channel.writeAndFlush(command, promise: nil)
    }

    private func checkLiveness() {
        guard let channel else { return }
        if let sentAt = pingSentAt, .now() - sentAt >= pingInterval {
            logger.warning("Redis did not answer PING on the pub/sub connection; reconnecting", metadata: ["redis": "\(configuration)"])
            channel.close(promise: nil)
            return
        }
        if pingSentAt == nil {
            pingSentAt = .now()
            channel.writeAndFlush(RedisCommand("PING"), promise: nil)
        }
    }

    // MARK: - Events from the handler (on the event loop)

    fileprivate func received(_ value: RESPValue) {
        guard case .array(let parts) = value, let kind = parts.first?.string else {
            switch value {
            case .simpleString(let text) where text.uppercased() == "PONG":
                // Redis answers PING with +PONG while the connection subscribes to nothing,
                // and with ["pong", ""] once it does.
                pingSentAt = nil
            case .error(let message) where mode == .sharded && message.hasPrefix("MOVED "):
                // The node no longer owns the slot of a channel just subscribed.
                let parts = message.split(separator: " ")
                guard parts.count == 3, let slot = Int(parts[1]) else { break }
                logger.info("A cluster node no longer serves a channel's slot; moving it", metadata: ["redis": "\(configuration)", "slot": "\(slot)", "to": "\(parts[2])"])
                onMoved?(slot, String(parts[2]))
            case .error(let message):
                logger.error("Redis refused a pub/sub command", metadata: ["redis": "\(configuration)", "error": "\(message)"])
                channel?.close(promise: nil)
            default:
                break  // +OK from AUTH
            }
            return
        }
        switch kind {
        case "message" where parts.count == 3, "smessage" where parts.count == 3:
            guard let name = parts[1].string, case .bulkString(let payload) = parts[2] else { return }
            if confirmed.contains(name) {
                batch.append(Message(channel: name, payload: payload))
            }
        case "sunsubscribe" where parts.count == 3 && repliesPending[parts[1].string ?? ""] == nil:
            // Not asked for: the node gave up the channel's slot (a failover or a slot
            // migration). The owner decides where it goes now.
            guard let name = parts[1].string, references[name] != nil else { return }
            confirmed.remove(name)
            resubscribing.remove(name)
            onLost?([name])
        case "subscribe" where parts.count == 3, "unsubscribe" where parts.count == 3,
            "ssubscribe" where parts.count == 3, "sunsubscribe" where parts.count == 3:
            guard let name = parts[1].string else { return }
            let pending = max(0, repliesPending[name, default: 0] - 1)
            repliesPending[name] = pending == 0 ? nil : pending
            if pending == 0 && references[name] != nil {
                confirmed.insert(name)
                for waiter in waiters.removeValue(forKey: name) ?? [] { waiter.succeed() }
            }
            if kind == "subscribe" || kind == "ssubscribe", resubscribing.remove(name) != nil, resubscribing.isEmpty {
                let names = Array(references.keys)
                onResubscribe?(names)
            }
        case "pong":
            pingSentAt = nil
        default:
            logger.debug("Unexpected pub/sub reply from Redis", metadata: ["kind": "\(kind)"])
        }
    }

    // MARK: - Moving channels between cluster nodes (on the event loop)

    private var subscribeCommand: String { mode == .sharded ? "SSUBSCRIBE" : "SUBSCRIBE" }

    /// Whether `name` has references here.
    func serves(_ name: String) -> Bool {
        eventLoop.preconditionInEventLoop()
        return references[name] != nil
    }

    /// Forgets `name` without a word to Redis (the node gave it up or is gone), and
    /// returns its references and the joins still waiting for a confirmation.
    func drop(_ name: String) -> (references: Int, waiters: [EventLoopPromise<Void>]) {
        eventLoop.preconditionInEventLoop()
        let count = references.removeValue(forKey: name) ?? 0
        repliesPending[name] = nil
        confirmed.remove(name)
        resubscribing.remove(name)
        return (count, waiters.removeValue(forKey: name) ?? [])
    }

    /// Takes over `name` from another node: its references, and its waiting joins. The
    /// future completes once this node confirmed the subscription.
    func adopt(_ name: String, references count: Int, waiters moved: [EventLoopPromise<Void>]) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let promise = eventLoop.makePromise(of: Void.self)
        let first = references[name] == nil
        references[name, default: 0] += max(count, 1)
        waiters[name, default: []].append(contentsOf: moved + [promise])
        if first, let channel {
            send(RedisCommand(subscribeCommand, .string(name)), on: channel, counting: [name])
        } else if confirmed.contains(name) && repliesPending[name, default: 0] == 0 {
            for waiter in waiters.removeValue(forKey: name) ?? [] { waiter.succeed() }
        }
        return promise.futureResult
    }

    /// Sends SSUBSCRIBE again for a channel the node unsubscribed by itself; the future
    /// completes once the node confirmed it.
    func resubscribe(_ name: String) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard references[name] != nil, let channel else {
            return eventLoop.makeFailedFuture(RedisError(.unavailable, "no pub/sub connection to Redis at \(configuration)"))
        }
        let promise = eventLoop.makePromise(of: Void.self)
        waiters[name, default: []].append(promise)
        if repliesPending[name] == nil {
            send(RedisCommand(subscribeCommand, .string(name)), on: channel, counting: [name])
        }
        return promise.futureResult
    }

    /// Whether the pub/sub connection is up (on the event loop).
    var isConnected: Bool {
        eventLoop.preconditionInEventLoop()
        return channel != nil
    }

    /// Channels referenced here that Redis has not confirmed (on the event loop).
    var unconfirmedCount: Int {
        eventLoop.preconditionInEventLoop()
        return references.keys.filter { !confirmed.contains($0) }.count
    }

    fileprivate func readComplete() {
        guard !batch.isEmpty else { return }
        let messages = batch
        batch.removeAll(keepingCapacity: true)
        onMessages(messages)
    }

    fileprivate func closed(_ closedChannel: any Channel) {
        guard channel === closedChannel else { return }
        channel = nil
        onStateChange?(false, false)
        pingTask?.cancel()
        pingTask = nil
        pingSentAt = nil
        confirmed.removeAll()
        repliesPending.removeAll()
        resubscribing.removeAll()
        batch.removeAll()
        let error = RedisError(.unavailable, "the pub/sub connection to Redis at \(configuration) closed")
        for name in Array(waiters.keys) { failWaiters(of: name, with: error) }
    }

    private func failWaiters(of name: String, with error: any Error) {
        for waiter in waiters.removeValue(forKey: name) ?? [] { waiter.fail(error) }
    }
}

/// Glue between the pub/sub socket and ``RedisSubscriber``: parses replies and
/// hands them over; writes commands as RESP.
final class RedisPubSubHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisCommand
    typealias OutboundOut = ByteBuffer

    private let replies = NIOSingleStepByteToMessageProcessor(RESPReader())
    private let subscriber: RedisSubscriber

    init(subscriber: RedisSubscriber) {
        self.subscriber = subscriber
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        unwrapOutboundIn(data).encode(into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try replies.process(buffer: unwrapInboundIn(data)) { subscriber.received($0) }
        } catch {
            subscriber.readComplete()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        subscriber.readComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        subscriber.closed(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
