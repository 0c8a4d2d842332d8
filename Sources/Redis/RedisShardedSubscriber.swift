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
public final class RedisShardedSubscriber: @unchecked Sendable {
    /// The loop that owns this subscriber and its nodes' subscribers.
    public let eventLoop: any EventLoop
    private let cluster: RedisClusterClient
    private let logger: Logger
    private let onMessages: RedisSubscriber.MessageHandler
    private let running = ServiceSet()

    // Confined to `eventLoop`.
    private var nodes: [String: RedisSubscriber] = [:]
    private var counts: [String: Int] = [:]
    private var placement: [String: String] = [:]
    private var lost: Set<String> = []
    private var onResubscribe: RedisSubscriber.ResubscribeHandler?
    private var onStateChange: RedisNodeStateHandler?
    private var retryTask: RepeatedTask?
    private var isShutdown = false

    /// Creates a subscriber; it connects in ``connect()``.
    public init(cluster: RedisClusterClient, eventLoop: any EventLoop, logger: Logger, onMessages: @escaping RedisSubscriber.MessageHandler) {
        self.cluster = cluster
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessages = onMessages
        cluster.onTopologyChange { [weak self] in
            guard let self else { return }
            self.eventLoop.execute { self.rebalance() }
        }
    }

    /// Sets the handler told about channels subscribed again (after a reconnect or a move).
    public func onResubscribe(_ handler: @escaping RedisSubscriber.ResubscribeHandler) {
        eventLoop.execute { self.onResubscribe = handler }
    }

    /// Sets the handler told each time a node's pub/sub connection goes up or down.
    public func onStateChange(_ handler: @escaping RedisNodeStateHandler) {
        eventLoop.execute { self.onStateChange = handler }
    }

    /// Opens a pub/sub connection to every primary; fails if one cannot be reached.
    public func connect() async throws {
        let primaries = cluster.primaries
        let subscribers = try await eventLoop.submit {
            self.retryTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(500)) { _ in
                if !self.lost.isEmpty { self.rebalance() }
            }
            return primaries.map { self.node($0) }
        }.get()
        for subscriber in subscribers { try await subscriber.connect() }
    }

    /// Adds a reference to `name`; the future completes once its node confirmed it.
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.counts[name, default: 0] += 1
            if let address = self.placement[name], let node = self.nodes[address] {
                return node.subscribeNow(name)
            }
            guard let owner = self.cluster.owner(ofSlot: ClusterSlot.of(name)) else {
                self.cluster.requestRefresh()
                return self.eventLoop.makeFailedFuture(RedisError(.unavailable, "no node of the cluster serves \(name) now; reading the slot map again"))
            }
            self.placement[name] = owner
            return self.node(owner).subscribeNow(name)
        }
    }

    /// Drops a reference to `name`; the last one unsubscribes on its node.
    public func unsubscribe(_ name: String) {
        eventLoop.execute {
            guard let count = self.counts[name] else { return }
            let address = self.placement[name]
            if count > 1 {
                self.counts[name] = count - 1
            } else {
                self.counts[name] = nil
                self.placement[name] = nil
                self.lost.remove(name)
            }
            if let address { self.nodes[address]?.unsubscribeNow(name) }
        }
    }

    /// Why messages may not be arriving now, or `nil` when every channel's node is
    /// connected and has confirmed it.
    public var notReadyReason: EventLoopFuture<String?> {
        eventLoop.submit {
            let used = Set(self.placement.values)
            let down = self.cluster.primaries.union(used).filter { self.nodes[$0]?.isConnected != true }
            if !down.isEmpty { return "no pub/sub connection to cluster node(s) \(down.sorted().joined(separator: ", ")) (reconnecting)" }
            if !self.lost.isEmpty { return "\(self.lost.count) channel(s) are moving to another cluster node" }
            let waiting = used.reduce(0) { $0 + (self.nodes[$1]?.unconfirmedCount ?? 0) }
            return waiting == 0 ? nil : "Redis has not confirmed \(waiting) subscription(s) yet"
        }
    }

    /// The node subscribers, to run beside the server.
    public var services: [any Service] { [running] }

    /// Closes every node's connection.
    public func shutdown() {
        eventLoop.execute {
            self.isShutdown = true
            self.retryTask?.cancel()
            for node in self.nodes.values { node.shutdown() }
        }
    }

    // MARK: - On the event loop

    private func node(_ address: String) -> RedisSubscriber {
        if let node = nodes[address] { return node }
        let (host, port) = (try? RedisTarget.hostAndPort(address[...], in: address)) ?? ("127.0.0.1", 6379)
        let node = RedisSubscriber(
            configuration: cluster.seeds[0].at(host: host, port: port),
            eventLoop: eventLoop,
            logger: logger,
            mode: .sharded,
            onMessages: onMessages
        )
        node.onLost = { [unowned self] names in
            self.lost.formUnion(names)
            self.cluster.requestRefresh()
        }
        node.onMoved = { [unowned self] slot, owner in
            for (name, place) in self.placement where place == address && ClusterSlot.of(name) == slot {
                self.move(name, to: owner)
            }
            self.cluster.requestRefresh()
        }
        node.onResubscribe { [unowned self] names in
            self.eventLoop.execute { self.onResubscribe?(names) }
        }
        node.onStateChange { [unowned self] connected, isReconnect in
            self.onStateChange?(address, connected, isReconnect)
        }
        nodes[address] = node
        if isShutdown { node.shutdown() } else { running.add(node) }
        return node
    }

    /// Puts every channel on the node that owns its slot now; subscribes again the ones
    /// a node gave up; disconnects from nodes that serve nothing and are no longer primaries.
    private func rebalance() {
        guard !isShutdown else { return }
        for (name, address) in placement {
            guard let owner = cluster.owner(ofSlot: ClusterSlot.of(name)) else { continue }
            if owner != address {
                move(name, to: owner)
            } else if lost.remove(name) != nil, let node = nodes[owner] {
                logger.info("Subscribing again to a channel its node gave up", metadata: ["redis": "\(owner)", "channel": "\(name)"])
                node.resubscribe(name).whenComplete { [unowned self] result in self.confirmed(name, result) }
            }
        }
        let primaries = cluster.primaries
        let used = Set(placement.values)
        for (address, node) in nodes where !primaries.contains(address) && !used.contains(address) {
            logger.info("Closing the pub/sub connection to a node that is no longer a primary", metadata: ["redis": "\(address)"])
            node.shutdown()
            nodes[address] = nil
        }
    }

    private func move(_ name: String, to owner: String) {
        guard let from = placement[name], from != owner else { return }
        let (references, waiters) = nodes[from]?.drop(name) ?? (counts[name] ?? 1, [])
        logger.info("Moving a channel to the node that owns its slot now", metadata: ["channel": "\(name)", "from": "\(from)", "to": "\(owner)"])
        placement[name] = owner
        lost.remove(name)
        node(owner).adopt(name, references: max(references, counts[name] ?? 1), waiters: waiters)
            .whenComplete { [unowned self] result in self.confirmed(name, result) }
    }

    /// A moved or re-subscribed channel is confirmed (catch it up), or failed (try again).
    private func confirmed(_ name: String, _ result: Result<Void, any Error>) {
        switch result {
        case .success:
            onResubscribe?([name])
        case .failure(let error):
            guard placement[name] != nil else { return }
            logger.warning("Could not subscribe a moved channel yet; retrying", metadata: ["channel": "\(name)", "error": "\(error)"])
            lost.insert(name)
        }
    }
}
