import Logging
import NIOCore
import ServiceLifecycle

/// Sharded pub/sub on a Redis Cluster: each channel is subscribed (SSUBSCRIBE) on the
/// primary that owns its slot, through one ``RedisSubscriber`` per primary.
///
/// When the slot map changes (a failover, a slot migration), each channel whose owner
/// changed is moved: forgotten on the old node, subscribed on the new one, with its
/// reference count and any joins still waiting. A node that gives a channel up by
/// itself (`sunsubscribe` pushed after a failover) or answers `MOVED` has the channel
/// moved as soon as the slot map says where. Once the new node confirms, the
/// resubscribe handler is told, so the channel is caught up from its history: what was
/// published in between is not lost.
///
/// Everything here, and every node's subscriber, lives on one event loop.
public final class RedisShardedSubscriber: Sendable {
    /// The loop that owns this subscriber and its nodes' subscribers.
    public let eventLoop: any EventLoop
    private let cluster: RedisClusterClient
    private let logger: Logger
    private let onMessages: RedisSubscriber.MessageHandler
    private let running = ServiceSet()

    private let state: NIOLoopBoundBox<State>

    private struct State {
        var nodes: [String: RedisSubscriber] = [:]
        /// References per channel, over every node.
        var counts: [String: Int] = [:]
        /// The node (`host:port`) each referenced channel is subscribed on.
        var placement: [String: String] = [:]
        /// Channels a node gave up, or that could not move yet: subscribed again by ``rebalance()``.
        var lost: Set<String> = []
        var onResubscribe: RedisSubscriber.ResubscribeHandler?
        var onStateChange: RedisNodeStateHandler?
        var retryTask: RepeatedTask?
        var isShutdown = false
    }

    /// Creates a subscriber; it connects in ``connect()``.
    public init(cluster: RedisClusterClient, eventLoop: any EventLoop, logger: Logger, onMessages: @escaping RedisSubscriber.MessageHandler) {
        self.cluster = cluster
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessages = onMessages
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
        cluster.onTopologyChange { [weak self] in
            guard let self else { return }
            self.eventLoop.execute { self.rebalance() }
        }
    }

    /// Sets the handler told about channels subscribed again (after a reconnect or a move).
    public func onResubscribe(_ handler: @escaping RedisSubscriber.ResubscribeHandler) {
        eventLoop.execute { self.state.value.onResubscribe = handler }
    }

    /// Sets the handler told each time a node's pub/sub connection goes up or down.
    public func onStateChange(_ handler: @escaping RedisNodeStateHandler) {
        eventLoop.execute { self.state.value.onStateChange = handler }
    }

    /// Opens a pub/sub connection to every primary; fails if one cannot be reached.
    public func connect() async throws {
        let primaries = cluster.primaries
        let subscribers = try await eventLoop.submit {
            self.state.value.retryTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(500)) { _ in
                if !self.state.value.lost.isEmpty { self.rebalance() }
            }
            return primaries.map { self.node($0) }
        }.get()
        for subscriber in subscribers { try await subscriber.connect() }
    }

    /// Adds a reference to `name`; the future completes once its node confirmed it.
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.state.value.counts[name, default: 0] += 1
            if let address = self.state.value.placement[name], let node = self.state.value.nodes[address] {
                return node.subscribeNow(name)
            }
            guard let owner = self.cluster.owner(ofSlot: ClusterSlot.of(name)) else {
                self.cluster.requestRefresh()
                return self.eventLoop.makeFailedFuture(RedisError(.unavailable, "no node of the cluster serves \(name) now; reading the slot map again"))
            }
            self.state.value.placement[name] = owner
            return self.node(owner).subscribeNow(name)
        }
    }

    /// Drops a reference to `name`; the last one unsubscribes on its node.
    public func unsubscribe(_ name: String) {
        eventLoop.execute {
            guard let count = self.state.value.counts[name] else { return }
            let address = self.state.value.placement[name]
            if count > 1 {
                self.state.value.counts[name] = count - 1
            } else {
                self.state.value.counts[name] = nil
                self.state.value.placement[name] = nil
                self.state.value.lost.remove(name)
            }
            if let address { self.state.value.nodes[address]?.unsubscribeNow(name) }
        }
    }

    /// Why messages may not be arriving now, or `nil` when every channel's node is
    /// connected and has confirmed it.
    public var notReadyReason: EventLoopFuture<String?> {
        eventLoop.submit {
            let used = Set(self.state.value.placement.values)
            let down = self.cluster.primaries.union(used).filter { self.state.value.nodes[$0]?.isConnected != true }
            if !down.isEmpty { return "no pub/sub connection to cluster node(s) \(down.sorted().joined(separator: ", ")) (reconnecting)" }
            if !self.state.value.lost.isEmpty { return "\(self.state.value.lost.count) channel(s) are moving to another cluster node" }
            let waiting = used.reduce(0) { $0 + (self.state.value.nodes[$1]?.unconfirmedCount ?? 0) }
            return waiting == 0 ? nil : "Redis has not confirmed \(waiting) subscription(s) yet"
        }
    }

    /// The node subscribers, to run beside the server.
    public var services: [any Service] { [running] }

    /// Closes every node's connection.
    public func shutdown() {
        eventLoop.execute {
            self.state.value.isShutdown = true
            self.state.value.retryTask?.cancel()
            for node in self.state.value.nodes.values { node.shutdown() }
        }
    }

    // MARK: - On the event loop

    private func node(_ address: String) -> RedisSubscriber {
        if let node = state.value.nodes[address] { return node }
        let (host, port) = (try? RedisTarget.hostAndPort(address[...], in: address)) ?? ("127.0.0.1", 6379)
        let node = RedisSubscriber(
            configuration: cluster.seeds[0].at(host: host, port: port),
            eventLoop: eventLoop,
            logger: logger,
            mode: .sharded,
            onMessages: onMessages
        )
        node.onLost = { [unowned self] names in
            self.state.value.lost.formUnion(names)
            self.cluster.requestRefresh()
        }
        node.onMoved = { [unowned self] slot, owner in
            for (name, place) in self.state.value.placement where place == address && ClusterSlot.of(name) == slot {
                self.move(name, to: owner)
            }
            self.cluster.requestRefresh()
        }
        node.onResubscribe { [unowned self] names in
            self.eventLoop.execute { self.state.value.onResubscribe?(names) }
        }
        node.onStateChange { [unowned self] connected, isReconnect in
            self.state.value.onStateChange?(address, connected, isReconnect)
        }
        state.value.nodes[address] = node
        if state.value.isShutdown { node.shutdown() } else { running.add(node) }
        return node
    }

    /// Puts every channel on the node that owns its slot now; subscribes again the ones
    /// a node gave up; disconnects from nodes that serve nothing and are no longer primaries.
    private func rebalance() {
        guard !state.value.isShutdown else { return }
        for (name, address) in state.value.placement {
            guard let owner = cluster.owner(ofSlot: ClusterSlot.of(name)) else { continue }
            if owner != address {
                move(name, to: owner)
            } else if state.value.lost.remove(name) != nil, let node = state.value.nodes[owner] {
                logger.info("Subscribing again to a channel its node gave up", metadata: ["redis": "\(owner)", "channel": "\(name)"])
                node.resubscribe(name).whenComplete { [unowned self] result in self.confirmed(name, result) }
            }
        }
        let primaries = cluster.primaries
        let used = Set(state.value.placement.values)
        for (address, node) in state.value.nodes where !primaries.contains(address) && !used.contains(address) {
            logger.info("Closing the pub/sub connection to a node that is no longer a primary", metadata: ["redis": "\(address)"])
            node.shutdown()
            state.value.nodes[address] = nil
        }
    }

    private func move(_ name: String, to owner: String) {
        guard let from = state.value.placement[name], from != owner else { return }
        let (references, waiters) = state.value.nodes[from]?.drop(name) ?? (state.value.counts[name] ?? 1, [])
        logger.info("Moving a channel to the node that owns its slot now", metadata: ["channel": "\(name)", "from": "\(from)", "to": "\(owner)"])
        state.value.placement[name] = owner
        state.value.lost.remove(name)
        node(owner).adopt(name, references: max(references, state.value.counts[name] ?? 1), waiters: waiters)
            .whenComplete { [unowned self] result in self.confirmed(name, result) }
    }

    /// A moved or re-subscribed channel is confirmed (catch it up), or failed (try again).
    private func confirmed(_ name: String, _ result: Result<Void, any Error>) {
        switch result {
        case .success:
            state.value.onResubscribe?([name])
        case .failure(let error):
            guard state.value.placement[name] != nil else { return }
            logger.warning("Could not subscribe a moved channel yet; retrying", metadata: ["channel": "\(name)", "error": "\(error)"])
            state.value.lost.insert(name)
        }
    }
}
