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
public final class RedisSubscriber: Service, Sendable {
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
    private let mode: Mode
    private let state: NIOLoopBoundBox<State>

    private struct State {
        var subscriptions = SubscriptionStateMachine<EventLoopPromise<Void>>()
        var channel: (any Channel)?
        var batch: [Message] = []
        var pingSentAt: NIODeadline?
        var pingTask: RepeatedTask?
        var onResubscribe: ResubscribeHandler?
        var onStateChange: RedisStateHandler?
        var onLost: (([String]) -> Void)?
        var onMoved: ((Int, String) -> Void)?
    }

    /// Sharded: channels the node unsubscribed by itself (its slot moved away). On the event loop.
    var onLost: (([String]) -> Void)? {
        get { state.value.onLost }
        set { state.value.onLost = newValue }
    }
    /// Sharded: the node answered MOVED to a subscription (slot, new owner's `host:port`). On the event loop.
    var onMoved: ((Int, String) -> Void)? {
        get { state.value.onMoved }
        set { state.value.onMoved = newValue }
    }

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
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// Sets the handler told about the channels subscribed again after a reconnect.
    public func onResubscribe(_ handler: @escaping ResubscribeHandler) {
        eventLoop.execute { self.state.value.onResubscribe = handler }
    }

    /// Sets the handler told each time the pub/sub connection goes up or down.
    public func onStateChange(_ handler: @escaping RedisStateHandler) {
        eventLoop.execute { self.state.value.onStateChange = handler }
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
        let promise = eventLoop.makePromise(of: Void.self)
        run(state.value.subscriptions.subscribe(name, waiter: promise), unavailable: "no pub/sub connection to Redis at \(configuration); reconnecting")
        return promise.futureResult
    }

    /// ``unsubscribe(_:)``, already on the event loop.
    func unsubscribeNow(_ name: String) {
        switch state.value.subscriptions.unsubscribe(name) {
        case .none:
            break
        case .unsubscribe(let name, let failing, let send):
            let error = RedisError(.shutdown, "unsubscribed from \(name) before Redis confirmed it")
            for waiter in failing { waiter.fail(error) }
            if send { write(RedisCommand(mode == .sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", .string(name))) }
        }
    }

    /// The channels with at least one reference.
    public var subscribedChannels: EventLoopFuture<Set<String>> {
        eventLoop.submit { self.state.value.subscriptions.subscribedChannels }
    }

    /// Why messages may not be arriving now, or `nil` when the connection is up and Redis
    /// has confirmed every subscription.
    public var notReadyReason: EventLoopFuture<String?> {
        eventLoop.submit {
            let subscriptions = self.state.value.subscriptions
            guard subscriptions.isConnected else { return "no pub/sub connection to Redis (reconnecting)" }
            let waiting = subscriptions.unconfirmedCount
            return waiting == 0 ? nil : "Redis has not confirmed \(waiting) subscription(s) yet"
        }
    }

    /// Opens the pub/sub connection once; fails if Redis cannot be reached.
    public func connect() async throws {
        _ = try await establish()
    }

    /// Keeps the pub/sub connection up until graceful shutdown.
    public func run() async throws {
        var loop = ReconnectLoop(
            logger: logger,
            metadata: ["redis": "\(configuration)"],
            messages: .init(
                up: "Pub/sub connection to Redis is up",
                unreachable: "Cannot reach Redis for pub/sub; retrying",
                lost: "Lost the pub/sub connection to Redis; reconnecting"
            )
        )
        await loop.run(
            current: {
                let current = try? await eventLoop.submit { () -> ReconnectLoop.Current<any Channel> in
                    let state = self.state.value
                    if state.subscriptions.isShutdown { return .stopped }
                    return state.channel.map { .open($0) } ?? .none
                }.get()
                return current ?? .stopped
            },
            connect: { try await establish() },
            awaitClose: { channel in
                try? await channel.closeFuture.get()
                let stopping = (try? await eventLoop.submit { self.state.value.subscriptions.isShutdown }.get()) ?? true
                return stopping ? .stop : .reconnect
            },
            onGracefulShutdown: { self.shutdown() }
        )
    }

    /// Closes the connection and stops reconnecting.
    public func shutdown() {
        eventLoop.execute {
            let action = self.state.value.subscriptions.shutdown()
            let state = self.state.value
            state.pingTask?.cancel()
            if case .closeConnection = action { state.channel?.close(promise: nil) }
        }
    }

    // MARK: - Connection

    private func establish() async throws -> any Channel {
        let channel = try await RedisConnection.bootstrap(configuration: configuration, eventLoop: eventLoop) { channel in
            try channel.pipeline.syncOperations.addHandler(RedisPubSubHandler(subscriber: self))
        }
        try await eventLoop.submit {
            switch self.state.value.subscriptions.connectionEstablished() {
            case .close:
                channel.close(promise: nil)
                throw RedisError(.shutdown, "the Redis subscriber is shut down")
            case .resubscribe(let names, let isReconnect):
                self.attach(channel, resubscribing: names, isReconnect: isReconnect)
            }
        }.get()
        return channel
    }

    private func attach(_ channel: any Channel, resubscribing names: [String], isReconnect: Bool) {
        state.value.channel = channel
        state.value.onStateChange?(true, isReconnect)
        for command in configuration.handshake where command.description == "AUTH" {
            channel.write(command, promise: nil)
        }
        if !names.isEmpty { write(subscribe: names) }
        channel.flush()
        state.value.pingTask?.cancel()
        state.value.pingTask = eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { [weak self] _ in
            self?.checkLiveness()
        }
    }

    private func write(_ command: RedisCommand) {
        state.value.channel?.writeAndFlush(command, promise: nil)
    }

    /// SUBSCRIBE (one command) or SSUBSCRIBE (one per channel: one may name channels of one slot only).
    private func write(subscribe names: [String]) {
        switch mode {
        case .classic: write(RedisCommand("SUBSCRIBE", names.map { .string($0) }))
        case .sharded: for name in names { write(RedisCommand("SSUBSCRIBE", .string(name))) }
        }
    }

    private func run(_ action: SubscriptionStateMachine<EventLoopPromise<Void>>.SubscribeAction, unavailable: @autoclosure () -> String) {
        switch action {
        case .failUnavailable(let waiter): waiter.fail(RedisError(.unavailable, unavailable()))
        case .succeed(let waiter): waiter.succeed()
        case .sendSubscribe(let names): write(subscribe: names)
        case .wait: break
        }
    }

    private func checkLiveness() {
        let state = self.state.value
        guard let channel = state.channel else { return }
        if let sentAt = state.pingSentAt, .now() - sentAt >= pingInterval {
            logger.warning("Redis did not answer PING on the pub/sub connection; reconnecting", metadata: ["redis": "\(configuration)"])
            channel.close(promise: nil)
            return
        }
        if state.pingSentAt == nil {
            self.state.value.pingSentAt = .now()
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
                state.value.pingSentAt = nil
            case .error(let message) where mode == .sharded && message.hasPrefix("MOVED "):
                // The node no longer owns the slot of a channel just subscribed.
                let parts = message.split(separator: " ")
                guard parts.count == 3, let slot = Int(parts[1]) else { break }
                logger.info("A cluster node no longer serves a channel's slot; moving it", metadata: ["redis": "\(configuration)", "slot": "\(slot)", "to": "\(parts[2])"])
                state.value.onMoved?(slot, String(parts[2]))
            case .error(let message):
                logger.error("Redis refused a pub/sub command", metadata: ["redis": "\(configuration)", "error": "\(message)"])
                state.value.channel?.close(promise: nil)
            default:
                break  // +OK from AUTH
            }
            return
        }
        switch kind {
        case "message" where parts.count == 3, "smessage" where parts.count == 3:
            guard let name = parts[1].string, case .bulkString(let payload) = parts[2] else { return }
            if state.value.subscriptions.messageReceived(name) == .deliver {
                state.value.batch.append(Message(channel: name, payload: payload))
            }
        case "subscribe" where parts.count == 3, "ssubscribe" where parts.count == 3:
            guard let name = parts[1].string else { return }
            run(state.value.subscriptions.subscribeReplyReceived(name))
        case "unsubscribe" where parts.count == 3:
            guard let name = parts[1].string else { return }
            run(state.value.subscriptions.unsubscribeReplyReceived(name))
        case "sunsubscribe" where parts.count == 3:
            guard let name = parts[1].string else { return }
            run(state.value.subscriptions.shardUnsubscribeReceived(name))
        case "pong":
            state.value.pingSentAt = nil
        default:
            logger.debug("Unexpected pub/sub reply from Redis", metadata: ["kind": "\(kind)"])
        }
    }

    private func run(_ action: SubscriptionStateMachine<EventLoopPromise<Void>>.ReplyAction) {
        switch action {
        case .none:
            break
        case .confirmed(let succeed, let resubscribed):
            for waiter in succeed { waiter.succeed() }
            if let resubscribed { state.value.onResubscribe?(resubscribed) }
        case .lost(let name):
            // Not asked for: the node gave up the channel's slot (a failover or a slot
            // migration). The owner decides where it goes now.
            state.value.onLost?([name])
        }
    }

    // MARK: - Moving channels between cluster nodes (on the event loop)

    /// Whether `name` has references here.
    func serves(_ name: String) -> Bool {
        state.value.subscriptions.serves(name)
    }

    /// Forgets `name` without a word to Redis (the node gave it up or is gone), and
    /// returns its references and the joins still waiting for a confirmation.
    func drop(_ name: String) -> (references: Int, waiters: [EventLoopPromise<Void>]) {
        state.value.subscriptions.drop(name)
    }

    /// Takes over `name` from another node: its references, and its waiting joins. The
    /// future completes once this node confirmed the subscription.
    func adopt(_ name: String, references count: Int, waiters moved: [EventLoopPromise<Void>]) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        switch state.value.subscriptions.adopt(name, references: count, waiters: moved, waiter: promise) {
        case .sendSubscribe(let names): write(subscribe: names)
        case .succeed(let waiters): for waiter in waiters { waiter.succeed() }
        case .wait: break
        }
        return promise.futureResult
    }

    /// Sends SSUBSCRIBE again for a channel the node unsubscribed by itself; the future
    /// completes once the node confirmed it.
    func resubscribe(_ name: String) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        run(state.value.subscriptions.resubscribe(name, waiter: promise), unavailable: "no pub/sub connection to Redis at \(configuration)")
        return promise.futureResult
    }

    /// Whether the pub/sub connection is up (on the event loop).
    var isConnected: Bool {
        state.value.subscriptions.isConnected
    }

    /// Channels referenced here that Redis has not confirmed (on the event loop).
    var unconfirmedCount: Int {
        state.value.subscriptions.unconfirmedCount
    }

    fileprivate func readComplete() {
        guard !state.value.batch.isEmpty else { return }
        let messages = state.value.batch
        state.value.batch.removeAll(keepingCapacity: true)
        onMessages(messages)
    }

    fileprivate func closed(_ closedChannel: any Channel) {
        guard state.value.channel === closedChannel else { return }
        state.value.channel = nil
        state.value.onStateChange?(false, false)
        state.value.pingTask?.cancel()
        state.value.pingTask = nil
        state.value.pingSentAt = nil
        state.value.batch.removeAll()
        switch state.value.subscriptions.connectionLost() {
        case .fail(let failing):
            let error = RedisError(.unavailable, "the pub/sub connection to Redis at \(configuration) closed")
            for waiter in failing { waiter.fail(error) }
        }
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
