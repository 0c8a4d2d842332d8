import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Commands to a Redis Cluster: each goes to the primary that owns its key's slot.
///
/// The slot map comes from `CLUSTER SLOTS`, asked of any node it knows (the seeds at
/// first). It is read again every ``refreshInterval``, at once when a node answers
/// `MOVED` or a connection drops, and after a failover. Every node in the map has one
/// pipelined ``RedisClient`` (replicas too, so a promoted replica already has its
/// connection); a node that leaves the map is disconnected.
///
/// Redirections: `MOVED` updates the slot and retries on the named node; `ASK` (a slot
/// being migrated) sends `ASKING` and the command to the named node once; `TRYAGAIN`
/// and `CLUSTERDOWN` retry after a short pause, a few times. A command whose connection
/// fails is not retried: it may have run, and the caller decides.
public final class RedisClusterClient: Sendable {
    /// The nodes given at start.
    public let seeds: [RedisConfiguration]
    /// How often the slot map is read when nothing prompts it.
    public let refreshInterval: Duration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let running = ServiceSet()
    /// Wakes the ``Refresher`` to read the slot map (one wake-up is enough: it reads until no one asks again).
    private let refreshRequests = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    private struct State {
        /// The `host:port` of the primary that owns each slot; `nil`: nobody known.
        var owners: [String?] = Array(repeating: nil, count: ClusterSlot.count)
        var primaries: Set<String> = []
        var nodes: [String: Node] = [:]
        var onConnect: [@Sendable (RedisConnection) async -> Void] = []
        var onStateChange: [RedisNodeStateHandler] = []
        var onTopologyChange: [@Sendable () -> Void] = []
        var refreshing = false
        var refreshAgain = false
        var isShutdown = false
    }

    private struct Node {
        var client: RedisClient
        var created: ContinuousClock.Instant
    }

    /// Creates a client; ``start()`` reads the topology and connects.
    public init(seeds: [RedisConfiguration], eventLoopGroup: any EventLoopGroup, logger: Logger, refreshInterval: Duration = .seconds(2)) {
        self.seeds = seeds
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.refreshInterval = refreshInterval
        self.state = NIOLockedValueBox(State())
    }

    /// The seeds, password masked.
    public var description: String { RedisTarget.cluster(seeds: seeds).description }

    // MARK: - Handlers

    /// Work to do on every new connection to any node (e.g. loading scripts).
    public func onConnect(_ action: @escaping @Sendable (RedisConnection) async -> Void) {
        state.withLockedValue { $0.onConnect.append(action) }
    }

    /// Learns of each node connection going up or down.
    public func onStateChange(_ handler: @escaping RedisNodeStateHandler) {
        state.withLockedValue { $0.onStateChange.append(handler) }
    }

    /// Learns that the slot map changed.
    public func onTopologyChange(_ handler: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.onTopologyChange.append(handler) }
    }

    // MARK: - Topology

    /// The `host:port` of the primary owning `slot`, if known.
    public func owner(ofSlot slot: Int) -> String? {
        state.withLockedValue { $0.owners[slot] }
    }

    /// The primaries in the slot map.
    public var primaries: Set<String> { state.withLockedValue { $0.primaries } }

    /// Reads the slot map and connects to every node in it. Fails if no seed answers.
    public func start() async throws {
        try await refreshNow()
        let clients = state.withLockedValue { $0.nodes.values.map(\.client) }
        for client in clients {
            do {
                try await client.connect()
            } catch {
                logger.warning("Cannot reach a cluster node yet; retrying", metadata: ["redis": "\(client.configuration)", "error": "\(error)"])
            }
        }
    }

    /// Reads the slot map again soon, once, however many ask meanwhile. The reading is
    /// done by ``services``: asked before they run, it waits for them.
    public func requestRefresh() {
        let start = state.withLockedValue { state -> Bool in
            if state.refreshing {
                state.refreshAgain = true
                return false
            }
            state.refreshing = true
            return true
        }
        guard start else { return }
        refreshRequests.continuation.yield()
    }

    /// Reads the slot map until nobody asked again meanwhile (on the ``Refresher``'s task).
    private func refreshWhileAsked() async {
        while true {
            do {
                try await refreshNow()
            } catch {
                logger.warning("Cannot read the cluster's slot map", metadata: ["redis": "\(description)", "error": "\(error)"])
            }
            let again = state.withLockedValue { state -> Bool in
                if state.refreshAgain && !state.isShutdown {
                    state.refreshAgain = false
                    return true
                }
                state.refreshing = false
                return false
            }
            guard again else { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func refreshNow() async throws {
        let slots = try await readSlots()
        var owners = [String?](repeating: nil, count: ClusterSlot.count)
        var primaries: Set<String> = []
        var everyone: [String: RedisConfiguration] = [:]
        let login = seeds[0]
        for range in slots {
            for slot in range.first...range.last { owners[slot] = range.primary.address }
            primaries.insert(range.primary.address)
            for node in [range.primary] + range.replicas {
                everyone[node.address] = login.at(host: node.host, port: node.port)
            }
        }
        let (changed, added, removed, handlers) = state.withLockedValue { state in
            let changed = state.owners != owners
            state.owners = owners
            state.primaries = primaries
            var added: [RedisClient] = []
            for (address, configuration) in everyone where state.nodes[address] == nil {
                let client = makeClient(configuration, onConnect: state.onConnect, onStateChange: state.onStateChange)
                state.nodes[address] = Node(client: client, created: .now)
                added.append(client)
            }
            var removed: [RedisClient] = []
            for address in state.nodes.keys where everyone[address] == nil {
                if let node = state.nodes.removeValue(forKey: address) { removed.append(node.client) }
            }
            return (changed, added, removed, state.onTopologyChange)
        }
        for client in added { running.add(client) }
        for client in removed {
            logger.info("A node left the cluster's slot map; disconnecting", metadata: ["redis": "\(client.configuration)"])
            client.shutdown()
        }
        if changed {
            logger.info("Cluster slot map", metadata: ["primaries": "\(primaries.sorted().joined(separator: ","))", "nodes": "\(everyone.count)"])
            for handler in handlers { handler() }
        }
    }

    private func makeClient(
        _ configuration: RedisConfiguration,
        onConnect: [@Sendable (RedisConnection) async -> Void],
        onStateChange: [RedisNodeStateHandler]
    ) -> RedisClient {
        let client = RedisClient(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger)
        for action in onConnect { client.onConnect(action) }
        let address = configuration.address
        client.onStateChange { [weak self] connected, isReconnect in
            for handler in onStateChange { handler(address, connected, isReconnect) }
            if !connected { self?.requestRefresh() }
        }
        return client
    }

    struct SlotRange {
        var first: Int
        var last: Int
        var primary: (host: String, port: Int, address: String)
        var replicas: [(host: String, port: Int, address: String)]
    }

    /// `CLUSTER SLOTS` from the first node that answers: known nodes first, then seeds.
    private func readSlots() async throws -> [SlotRange] {
        let clients = state.withLockedValue { state in
            state.nodes.values.map(\.client).filter(\.isConnected).sorted { state.primaries.contains($0.configuration.address) && !state.primaries.contains($1.configuration.address) }
        }
        var failures: [String] = []
        var lastError: (any Error)?
        for client in clients {
            do {
                return try Self.parseSlots(try await client.send(RedisCommand("CLUSTER", "SLOTS")), askedHost: client.configuration)
            } catch {
                failures.append("\(client.configuration.address): \(error)")
                lastError = error
            }
        }
        for seed in seeds {
            do {
                let connection = try await RedisConnection.connect(configuration: seed, eventLoop: eventLoopGroup.next(), logger: logger)
                defer { connection.close() }
                return try Self.parseSlots(try await connection.send(RedisCommand("CLUSTER", "SLOTS")), askedHost: seed)
            } catch {
                failures.append("\(seed.address): \(error)")
                lastError = error
            }
        }
        throw RedisError(.unavailable, "no node of the cluster answered CLUSTER SLOTS (\(failures.joined(separator: "; ")))", underlying: lastError)
    }

    static func parseSlots(_ reply: RESPValue, askedHost node: RedisConfiguration) throws -> [SlotRange] {
        guard let ranges = reply.array else { throw RedisError(.unexpectedReply, "CLUSTER SLOTS answered \(reply)") }
        var askedHost = "127.0.0.1"
        if case .tcp(let host, _) = node.endpoint { askedHost = host }
        func endpoint(_ value: RESPValue) -> (host: String, port: Int, address: String)? {
            guard let fields = value.array, fields.count >= 2, let port = fields[1].integer else { return nil }
            // An empty or "?" address means "the node you asked".
            var host = fields[0].string ?? ""
            if host.isEmpty || host == "?" { host = askedHost }
            let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            return (host, Int(port), address)
        }
        return try ranges.map { range in
            guard let fields = range.array, fields.count >= 3, let first = fields[0].integer, let last = fields[1].integer,
                (0..<ClusterSlot.count).contains(Int(first)), (Int(first)..<ClusterSlot.count).contains(Int(last)),
                let primary = endpoint(fields[2])
            else { throw RedisError(.unexpectedReply, "CLUSTER SLOTS answered a range of an unknown shape: \(range)") }
            return SlotRange(first: Int(first), last: Int(last), primary: primary, replicas: fields.dropFirst(3).compactMap(endpoint))
        }
    }

    // MARK: - Commands

    /// Sends `command` to the primary owning `key`'s slot, following redirections.
    /// - Throws: ``RedisError``; `.unavailable` at once when that node is not connected.
    public func send(_ command: RedisCommand, key: String) async throws -> RESPValue {
        let slot = ClusterSlot.of(key)
        var target = owner(ofSlot: slot)
        var asking = false
        for attempt in 0..<5 {
            guard let address = target, let client = await client(for: address) else {
                requestRefresh()
                throw RedisError(.unavailable, "no node of the cluster \(description) serves slot \(slot) now; reading the slot map again")
            }
            do {
                return try await asking ? client.sendAsking(command) : client.send(command)
            } catch let error as RedisError where error.code == .server {
                let words = error.message.split(separator: " ")
                switch words.first {
                case "MOVED" where words.count == 3:
                    let moved = String(words[2])
                    state.withLockedValue { $0.owners[slot] = moved }
                    requestRefresh()
                    (target, asking) = (moved, false)
                case "ASK" where words.count == 3:
                    (target, asking) = (String(words[2]), true)
                case "TRYAGAIN", "CLUSTERDOWN":
                    try await Task.sleep(for: .milliseconds(50 * (attempt + 1)))
                    (target, asking) = (owner(ofSlot: slot), false)
                default:
                    throw error
                }
            } catch let error as RedisError {
                requestRefresh()
                throw error
            }
        }
        throw RedisError(.unavailable, "the cluster kept redirecting slot \(slot); try again")
    }

    /// Sends `command` to the primary at `address` (one of ``primaries``), for what
    /// concerns every node alike (`SCAN`).
    /// - Throws: ``RedisError``; `.unavailable` when that node is not connected.
    public func send(_ command: RedisCommand, toPrimary address: String) async throws -> RESPValue {
        guard primaries.contains(address), let client = await client(for: address) else {
            throw RedisError(.unavailable, "\(address) is not a primary of the cluster \(description) now")
        }
        return try await client.send(command)
    }

    /// The client of `address`, made when a redirection names a node not yet known; a
    /// client made in the last connect timeout is given that long to connect.
    private func client(for address: String) async -> RedisClient? {
        let (node, isNew) = state.withLockedValue { state -> (Node?, Bool) in
            if let node = state.nodes[address] { return (node, false) }
            guard !state.isShutdown, let (host, port) = try? RedisTarget.hostAndPort(address[...], in: address) else { return (nil, false) }
            let client = makeClient(seeds[0].at(host: host, port: port), onConnect: state.onConnect, onStateChange: state.onStateChange)
            let node = Node(client: client, created: .now)
            state.nodes[address] = node
            return (node, true)
        }
        guard let node else { return nil }
        if isNew { running.add(node.client) }
        if !node.client.isConnected, ContinuousClock.now - node.created < node.client.configuration.connectTimeout {
            _ = await node.client.waitUntilConnected(timeout: node.client.configuration.connectTimeout)
        }
        return node.client
    }

    /// Why commands may fail now, or `nil` when every slot has a connected primary.
    public var notReadyReason: String? {
        state.withLockedValue { state in
            let uncovered = state.owners.lazy.filter { $0 == nil }.count
            if uncovered > 0 { return "\(uncovered) slot(s) of the cluster have no known primary" }
            let down = state.primaries.filter { state.nodes[$0]?.client.isConnected != true }
            return down.isEmpty ? nil : "no command connection to cluster node(s) \(down.sorted().joined(separator: ", ")) (reconnecting)"
        }
    }

    // MARK: - Running

    /// The node connections and the periodic refresh, to run beside the server.
    public var services: [any Service] { [running, Refresher(cluster: self)] }

    /// Disconnects every node.
    public func shutdown() {
        let clients = state.withLockedValue { state in
            state.isShutdown = true
            return state.nodes.values.map(\.client)
        }
        for client in clients { client.shutdown() }
    }

    /// Reads the slot map when asked (``requestRefresh()``) and every ``refreshInterval``,
    /// until shutdown.
    private struct Refresher: Service {
        let cluster: RedisClusterClient

        func run() async throws {
            await cancelWhenGracefulShutdown {
                await withDiscardingTaskGroup { group in
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: cluster.refreshInterval)
                            if Task.isCancelled { break }
                            cluster.requestRefresh()
                        }
                    }
                    for await _ in cluster.refreshRequests.stream {
                        await cluster.refreshWhileAsked()
                    }
                }
            }
            cluster.shutdown()
        }
    }
}

/// Learns that the connection to one node (`host:port`) went up or down.
public typealias RedisNodeStateHandler = @Sendable (_ node: String, _ connected: Bool, _ isReconnect: Bool) -> Void
