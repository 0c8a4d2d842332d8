import Logging
import NIOConcurrencyHelpers
import NIOCore
import Redis
import ServiceLifecycle

/// A broker on Redis: any number of instances share channels through it.
///
/// Publishing runs one Lua script (EVALSHA, loaded on each new connection, sent in full
/// after `NOSCRIPT`) that in one atomic step takes the channel's next offset, keeps its
/// epoch, appends the message to the channel's history stream and PUBLISHes it. Each
/// instance subscribes, on one pub/sub connection, only to the channels its sockets are
/// in, and a ``ChannelSequencer`` fills any hole in what pub/sub delivers from the history.
public final class RedisBroker: Broker {
    /// The Redis URL, password masked.
    public var description: String { "redis (\(target))" }

    private let target: RedisTarget
    /// Publishes and the small scripts (presence, admission, fences).
    private let commands: Commands
    /// History reads, on connections of their own: a large read must never hold up a
    /// publish queued behind it.
    private let reads: Commands
    private let pubsub: PubSub
    private let sequencer: ChannelSequencer
    private let policy: HistoryPolicy
    private let logger: Logger
    private let scripts = NIOLockedValueBox<[String: String]>([:])
    /// The highest offset this instance has seen per channel, with its epoch: the fence
    /// of the publish script.
    private let seen: HighWater
    /// The publish script of this target: PUBLISH, or SPUBLISH on a cluster.
    private let publishScript: String

    /// Where commands go: the one server, or the cluster node owning the key's slot.
    enum Commands: Sendable {
        case single(RedisClient)
        case cluster(RedisClusterClient)

        /// A second client to the same target.
        static func make(_ target: RedisTarget, eventLoopGroup: any EventLoopGroup, logger: Logger) -> Commands {
            switch target {
            case .single(let configuration): .single(RedisClient(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger))
            case .cluster(let seeds): .cluster(RedisClusterClient(seeds: seeds, eventLoopGroup: eventLoopGroup, logger: logger))
            }
        }

        func send(_ command: RedisCommand, key: String) async throws -> RESPValue {
            switch self {
            case .single(let client): try await client.send(command)
            case .cluster(let cluster): try await cluster.send(command, key: key)
            }
        }

        func start() async throws {
            switch self {
            case .single(let client): try await client.connect()
            case .cluster(let cluster): try await cluster.start()
            }
        }

        func shutdown() {
            switch self {
            case .single(let client): client.shutdown()
            case .cluster(let cluster): cluster.shutdown()
            }
        }

        var services: [any Service] {
            switch self {
            case .single(let client): [client]
            case .cluster(let cluster): cluster.services
            }
        }

        /// Runs `action` on every new connection; counts the connection's state as `role`.
        func watch(role: String, metrics: ChatMetrics, onConnect action: @escaping @Sendable (RedisConnection) async -> Void) {
            switch self {
            case .single(let client):
                let node = client.configuration.description
                client.onStateChange { connected, isReconnect in
                    metrics.redisConnection(role, node: node, connected: connected, reconnected: isReconnect)
                }
                client.onConnect(action)
            case .cluster(let cluster):
                cluster.onStateChange { node, connected, isReconnect in
                    metrics.redisConnection(role, node: node, connected: connected, reconnected: isReconnect)
                }
                cluster.onConnect(action)
            }
        }
    }

    /// Where subscriptions go: one pub/sub connection, or sharded pub/sub per cluster primary.
    enum PubSub: Sendable {
        case single(RedisSubscriber)
        case sharded(RedisShardedSubscriber)

        func subscribe(_ name: String) -> EventLoopFuture<Void> {
            switch self {
            case .single(let subscriber): subscriber.subscribe(name)
            case .sharded(let subscriber): subscriber.subscribe(name)
            }
        }

        func unsubscribe(_ name: String) {
            switch self {
            case .single(let subscriber): subscriber.unsubscribe(name)
            case .sharded(let subscriber): subscriber.unsubscribe(name)
            }
        }
    }

    /// Publishes one message.
    ///
    /// KEYS: meta hash, history stream, and the publish's idempotency key if it has one.
    /// ARGV: pub/sub channel, data, time (ms), an epoch for a channel that has none,
    /// history size, time to live in ms (0: none), the sender's name (empty: none), the
    /// highest offset this instance has seen in the channel with its epoch (the fence),
    /// whether the publish may create the channel (`1`/`0`), and how long to remember
    /// the idempotency key (ms).
    ///
    /// The fence: Redis may lose its last writes (a crash failover, asynchronous
    /// replication; a crash with `appendfsync everysec`). The counter would then hand
    /// those offsets out again, and instances that delivered the lost messages would
    /// take the new ones for duplicates. So the counter never goes below what the
    /// publishing instance has seen in the same epoch; the lost offsets stay a hole
    /// (readers who missed them get a `gap`).
    ///
    /// The idempotency key is looked up and stored in the same atomic step, so two
    /// instances racing on one key publish once.
    ///
    /// Returns `{offset, epoch, raised from (0 when the fence was not needed), repeat (1
    /// when the key was known: nothing published), created (1: the channel is new; -1:
    /// refused because it would have been), time}`. On a cluster, `PUBLISH` becomes
    /// `SPUBLISH`: the pub/sub channel carries the same hash tag as the keys, so it lives
    /// in their slot.
    static func publishScript(publish: String) -> String {
        """
        if KEYS[3] then
          local first = redis.call('GET', KEYS[3])
          if first then
            local offset, epoch, time = string.match(first, '^(%d+) (%S+) (%d+)$')
            if offset then return {tonumber(offset), epoch, 0, 1, 0, tonumber(time)} end
          end
        end
        local created = 0
        if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4]) == 1 then
          if ARGV[10] ~= '1' then
            redis.call('DEL', KEYS[1])
            return {0, '', 0, 0, -1, 0}
          end
          created = 1
          -- A new epoch: whatever history is left from an older one is not part of it.
          redis.call('DEL', KEYS[2])
        end
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        local raised = 0
        if ARGV[9] ~= '0' and ARGV[8] == epoch then
          local current = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
          if current < tonumber(ARGV[9]) then
            redis.call('HSET', KEYS[1], 'offset', ARGV[9])
            raised = current
          end
        end
        local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
        local header = 'v1 ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[3]
        if ARGV[7] ~= '' then
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], offset .. '-0', 't', ARGV[3], 'd', ARGV[2], 'n', ARGV[7])
          header = header .. ' ' .. ARGV[7]
        else
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], offset .. '-0', 't', ARGV[3], 'd', ARGV[2])
        end
        if ARGV[6] ~= '0' then
          redis.call('PEXPIRE', KEYS[1], ARGV[6])
          redis.call('PEXPIRE', KEYS[2], ARGV[6])
        end
        if KEYS[3] then
          redis.call('SET', KEYS[3], offset .. ' ' .. epoch .. ' ' .. ARGV[3], 'PX', ARGV[11])
        end
        redis.call('\(publish)', ARGV[1], header .. '\\n' .. ARGV[2])
        return {offset, epoch, raised, 0, created, tonumber(ARGV[3])}
        """
    }

    /// The publish script of one Redis.
    static let publishScript = publishScript(publish: "PUBLISH")
    /// The publish script of a cluster: sharded pub/sub.
    static let shardedPublishScript = publishScript(publish: "SPUBLISH")

    /// Reads history in one consistent step.
    ///
    /// KEYS: meta hash, history stream. ARGV: first stream ID to read (empty: the newest
    /// entries), how many. Returns `{epoch, last offset, oldest entry, entries}`.
    static let historyScript = """
        local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
        local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
        local entries
        if ARGV[1] == '' then
          entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
        else
          entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
        end
        return {meta[1], meta[2], oldest, entries}
        """

    /// A room's leases and who is in it. KEYS: leases, names. ARGV: instance, lifetime
    /// (ms), grace (ms), list limit, how many people are refreshed, then (id, name) per
    /// refreshed person, then the ids leaving this instance. Uses Redis' clock, so
    /// instances with skewed clocks agree. Returns `{online, id, name, id, name, …}`
    /// (only `{online}` past the list limit; `{-1}` for a limit below 0: renew only).
    static let presenceScript = """
        local now = redis.call('TIME')
        local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        local instance = ARGV[1]
        local lifetime = tonumber(ARGV[2])
        local grace = tonumber(ARGV[3])
        local limit = tonumber(ARGV[4])
        local count = tonumber(ARGV[5])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
        local batch = {}
        for i = 0, count - 1 do
          local id = ARGV[6 + 2 * i]
          local name = ARGV[7 + 2 * i]
          batch[#batch + 1] = ms + lifetime
          batch[#batch + 1] = instance .. '|' .. id
          if name ~= '' then redis.call('HSET', KEYS[2], id, name) else redis.call('HDEL', KEYS[2], id) end
          if #batch >= 1000 then
            redis.call('ZADD', KEYS[1], unpack(batch))
            batch = {}
          end
        end
        if #batch > 0 then redis.call('ZADD', KEYS[1], unpack(batch)) end
        for i = 6 + 2 * count, #ARGV do
          redis.call('ZADD', KEYS[1], 'XX', ms + grace, instance .. '|' .. ARGV[i])
        end
        if count > 0 then
          redis.call('PEXPIRE', KEYS[1], lifetime * 2)
          redis.call('PEXPIRE', KEYS[2], lifetime * 2)
        end
        if limit < 0 then return {-1} end
        local seen = {}
        local ids = {}
        for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local id = string.match(lease, '|(.*)$')
          if id and not seen[id] then
            seen[id] = true
            ids[#ids + 1] = id
          end
        end
        if #ids > limit then return {#ids} end
        local out = {#ids}
        if #ids > 0 then
          local names = redis.call('HMGET', KEYS[2], unpack(ids))
          for i, id in ipairs(ids) do
            out[#out + 1] = id
            out[#out + 1] = names[i] or ''
          end
        end
        return out
        """

    /// Raises a channel's counter to an offset already delivered, after Redis lost writes.
    /// KEYS: meta hash. ARGV: epoch, offset. Returns the counter before (or -1 if the
    /// epoch is another, or nothing needed raising).
    static let fenceScript = """
        if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return -1 end
        local current = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
        if current >= tonumber(ARGV[2]) then return -1 end
        redis.call('HSET', KEYS[1], 'offset', ARGV[2])
        return current
        """

    /// A place in a capped room, atomically. KEYS: leases. ARGV: instance, id, cap,
    /// lifetime (ms). Returns 1 when admitted (already there, or room left), 0 when full.
    static let admitScript = """
        local now = redis.call('TIME')
        local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
        local mine = ARGV[1] .. '|' .. ARGV[2]
        local seen = {}
        local people = 0
        for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local id = string.match(lease, '|(.*)$')
          if id == ARGV[2] then
            redis.call('ZADD', KEYS[1], 'GT', ms + tonumber(ARGV[4]), mine)
            return 1
          end
          if id and not seen[id] then
            seen[id] = true
            people = people + 1
          end
        end
        if people >= tonumber(ARGV[3]) then return 0 end
        redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[4]), mine)
        redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
        return 1
        """

    /// Creates a broker; it connects in ``start()``.
    /// - Parameters:
    ///   - target: one Redis, or a Redis Cluster (sharded pub/sub, Redis 7 or later).
    ///   - history: how much history each channel keeps.
    ///   - eventLoopGroup: the loops to run the Redis connections on.
    ///   - logger: for connection changes.
    ///   - metrics: where connection states and drops are counted.
    ///   - deliver: receives the events of the channels this instance joined, in order.
    public init(
        target: RedisTarget,
        history policy: HistoryPolicy = HistoryPolicy(),
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        metrics: ChatMetrics = .none,
        deliver: @escaping @Sendable ([ChatEvent]) -> Void
    ) {
        self.target = target
        self.logger = logger
        self.policy = policy
        let subscriberLoop = eventLoopGroup.next()
        let scripts = self.scripts
        let commands: Commands
        switch target {
        case .single(let configuration):
            commands = .single(RedisClient(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger))
            publishScript = Self.publishScript
        case .cluster(let seeds):
            commands = .cluster(RedisClusterClient(seeds: seeds, eventLoopGroup: eventLoopGroup, logger: logger))
            publishScript = Self.shardedPublishScript
        }
        self.commands = commands
        let reads = Commands.make(target, eventLoopGroup: eventLoopGroup, logger: logger)
        self.reads = reads
        let seen = HighWater()
        self.seen = seen
        let sequencer = ChannelSequencer(
            eventLoop: subscriberLoop,
            fetch: { channel, offset in
                try await Self.readHistory(commands: reads, scripts: scripts, channel: channel, after: offset, limit: 10_000)
            },
            deliver: { events in
                for case .gap(_, let from, let to) in events { metrics.dropped(.historyGap, count: Int(to - from + 1)) }
                seen.record(events)
                deliver(events)
            },
            reused: { channel, offset in
                logger.error(
                    "Redis handed out an offset again: it lost writes this instance had delivered (a crash failover or a crash without fsync); the message is not delivered",
                    metadata: ["channel": "\(channel)", "offset": "\(offset)"]
                )
                metrics.dropped(.offsetReused)
            },
            behind: { channel, epoch, offset in
                Task {
                    do {
                        let before = try await Self.run(
                            Self.fenceScript, keys: [RedisKeys.meta(channel)], arguments: [.string(epoch), .integer(offset)], commands: commands, scripts: scripts
                        )
                        if let before = before.integer, before >= 0 {
                            logger.warning(
                                "Redis had lost the channel's last writes; its offsets now continue after the highest delivered here",
                                metadata: ["channel": "\(channel)", "redis_offset": "\(before)", "continued_after": "\(offset)"]
                            )
                        }
                    } catch {
                        logger.warning("Could not fence a channel whose last writes Redis lost", metadata: ["channel": "\(channel)", "error": "\(error)"])
                    }
                }
            }
        )
        self.sequencer = sequencer
        let received: RedisSubscriber.MessageHandler = { pubsub in
            var messages: [Message] = []
            messages.reserveCapacity(pubsub.count)
            for item in pubsub {
                guard let channel = RedisKeys.channel(ofMessages: item.channel),
                    let message = Message(channel: channel, envelope: item.payload)
                else {
                    logger.warning("Ignored a malformed message from Redis", metadata: ["redis.channel": "\(item.channel)"])
                    metrics.dropped(.malformed)
                    continue
                }
                messages.append(message)
            }
            sequencer.receive(messages)
        }
        let caughtUp: RedisSubscriber.ResubscribeHandler = { names in
            sequencer.resubscribed(Set(names.compactMap(RedisKeys.channel(ofMessages:))))
        }
        let used = [publishScript, Self.historyScript, Self.presenceScript, Self.admitScript, Self.fenceScript]
        let loadScripts: @Sendable (RedisConnection) async -> Void = { connection in
            for script in used {
                do {
                    let sha = try await connection.send(RedisCommand("SCRIPT", "LOAD", .string(script)))
                    scripts.withLockedValue { $0[script] = sha.string }
                } catch {
                    logger.warning("Could not load a script; it will be sent in full", metadata: ["error": "\(error)"])
                }
            }
        }
        commands.watch(role: "command", metrics: metrics, onConnect: loadScripts)
        reads.watch(role: "history", metrics: metrics, onConnect: loadScripts)
        switch commands {
        case .single(let client):
            let subscriber = RedisSubscriber(configuration: client.configuration, eventLoop: subscriberLoop, logger: logger, onMessages: received)
            subscriber.onResubscribe(caughtUp)
            let node = client.configuration.description
            subscriber.onStateChange { connected, isReconnect in
                metrics.redisConnection("pubsub", node: node, connected: connected, reconnected: isReconnect)
            }
            pubsub = .single(subscriber)
        case .cluster(let cluster):
            let subscriber = RedisShardedSubscriber(cluster: cluster, eventLoop: subscriberLoop, logger: logger, onMessages: received)
            subscriber.onResubscribe(caughtUp)
            subscriber.onStateChange { node, connected, isReconnect in
                metrics.redisConnection("pubsub", node: node, connected: connected, reconnected: isReconnect)
            }
            pubsub = .sharded(subscriber)
        }
    }

    public func start() async throws {
        do {
            try await commands.start()
            try await reads.start()
            switch pubsub {
            case .single(let subscriber): try await subscriber.connect()
            case .sharded(let subscriber): try await subscriber.connect()
            }
        } catch {
            shutdown()
            throw BrokerError(.unavailable, Self.reason(error))
        }
    }

    private func shutdown() {
        commands.shutdown()
        reads.shutdown()
        switch pubsub {
        case .single(let subscriber): subscriber.shutdown()
        case .sharded(let subscriber): subscriber.shutdown()
        }
    }

    public var services: [any Service] {
        switch pubsub {
        case .single(let subscriber): commands.services + reads.services + [subscriber]
        case .sharded(let subscriber): commands.services + reads.services + subscriber.services
        }
    }

    public func notReadyReason() async -> String? {
        let subscriptions: EventLoopFuture<String?>
        switch (commands, pubsub) {
        case (.single(let client), .single(let subscriber)):
            guard client.isConnected else { return "no command connection to Redis at \(client.configuration) (reconnecting)" }
            subscriptions = subscriber.notReadyReason
        case (.cluster(let cluster), .sharded(let subscriber)):
            if let reason = cluster.notReadyReason { return reason }
            subscriptions = subscriber.notReadyReason
        default:
            return "misconfigured broker"
        }
        do {
            return try await subscriptions.get()
        } catch {
            return "the pub/sub connection does not answer (\(error))"
        }
    }

    public func publish(_ data: ByteBuffer, name: String?, to channel: ChannelName, options: PublishOptions) async throws -> Publication {
        let time = Epoch.nowMilliseconds()
        let ttl = policy.timeToLive.map(Self.milliseconds) ?? 0
        let fence = seen.fence(of: channel)
        let arguments: [RedisArgument] = [
            .string(RedisKeys.messages(channel)), .bytes(data), .integer(time), .string(Epoch.make()),
            .integer(policy.size), .integer(ttl), .string(name ?? ""), .string(fence?.epoch ?? ""), .integer(fence?.offset ?? 0),
            .string(options.mayCreateChannel ? "1" : "0"), .integer(Self.milliseconds(policy.dedupeWindow)),
        ]
        var keys = [RedisKeys.meta(channel), RedisKeys.history(channel)]
        if let key = options.idempotencyKey { keys.append(RedisKeys.sent(channel, key: key)) }
        let reply = try await Self.run(publishScript, keys: keys, arguments: arguments, commands: commands, scripts: scripts)
        guard let fields = reply.array, fields.count == 6, let offset = fields[0].integer, let epoch = fields[1].string,
            let isRepeat = fields[3].integer, let created = fields[4].integer, let storedTime = fields[5].integer
        else {
            throw BrokerError(.failed, "Redis answered the publish script with \(reply)")
        }
        if created < 0 { throw BrokerError(.newChannelRefused, "the channel \(channel) does not exist") }
        if let raisedFrom = fields[2].integer, raisedFrom > 0 {
            logger.warning(
                "Redis had lost the channel's last writes; offsets continue after the highest this instance saw",
                metadata: ["channel": "\(channel)", "redis_offset": "\(raisedFrom)", "continued_after": "\(offset - 1)"]
            )
        }
        seen.record(channel, epoch: epoch, offset: offset)
        let message = Message(channel: channel, offset: offset, epoch: epoch, time: storedTime, data: data, name: name)
        return Publication(message: message, isRepeat: isRepeat == 1, createdChannel: created == 1)
    }

    public func updatePresence(
        of channel: ChannelName, instance: String, refreshing: [Member], leaving: [String],
        lifetime: Duration, grace: Duration, listLimit: Int
    ) async throws -> RoomSnapshot {
        var arguments: [RedisArgument] = [
            .string(instance), .integer(Self.milliseconds(lifetime)), .integer(Self.milliseconds(grace)), .integer(listLimit), .integer(refreshing.count),
        ]
        for member in refreshing { arguments += [.string(member.id), .string(member.name ?? "")] }
        arguments += leaving.map { .string($0) }
        let reply = try await Self.run(
            Self.presenceScript, keys: [RedisKeys.leases(channel), RedisKeys.names(channel)], arguments: arguments, commands: commands, scripts: scripts
        )
        guard let parts = reply.array, let online = parts.first?.integer else { throw BrokerError(.failed, "Redis answered the presence script with \(reply)") }
        guard parts.count > 1 || online == 0 else { return RoomSnapshot(online: Int(online), members: nil) }
        let members = stride(from: 1, to: parts.count - 1, by: 2).compactMap { index -> Member? in
            guard let id = parts[index].string else { return nil }
            let name = parts[index + 1].string
            return Member(id: id, name: name?.isEmpty == false ? name : nil)
        }
        return RoomSnapshot(online: Int(online), members: members)
    }

    public func admit(_ member: String, to channel: ChannelName, instance: String, cap: Int, lifetime: Duration) async throws -> Bool {
        let reply = try await Self.run(
            Self.admitScript, keys: [RedisKeys.leases(channel)],
            arguments: [.string(instance), .string(member), .integer(cap), .integer(Self.milliseconds(lifetime))], commands: commands, scripts: scripts
        )
        return reply.integer == 1
    }

    public func sharedSecret(named name: String, proposed: String) async throws -> String {
        let key = RedisKeys.secret(name)
        do {
            _ = try await commands.send(RedisCommand("SET", .string(key), .string(proposed), "NX"), key: key)
            guard let stored = try await commands.send(RedisCommand("GET", .string(key)), key: key).string else {
                throw BrokerError(.failed, "Redis lost the shared secret \(key) just after it was set")
            }
            return stored
        } catch let error as RedisError {
            throw BrokerError(.unavailable, "cannot read the shared secret from Redis (\(error.message))")
        }
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        Int64(duration / .milliseconds(1))
    }

    public func history(of channel: ChannelName, after offset: Int64?, limit: Int) async throws -> History {
        try await Self.readHistory(commands: reads, scripts: scripts, channel: channel, after: offset, limit: limit)
    }

    public func join(_ channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        sequencer.join(channel)
        return pubsub.subscribe(RedisKeys.messages(channel))
            .flatMapErrorThrowing { error in
                throw BrokerError(.unavailable, "cannot subscribe to \(channel) in Redis: \(Self.reason(error))")
            }
            .hop(to: eventLoop)
    }

    public func leave(_ channel: ChannelName) {
        sequencer.leave(channel)
        pubsub.unsubscribe(RedisKeys.messages(channel))
    }

    // MARK: - Scripts

    private static func readHistory(
        commands: Commands,
        scripts: NIOLockedValueBox<[String: String]>,
        channel: ChannelName,
        after offset: Int64?,
        limit: Int
    ) async throws -> History {
        // Readers bound what clients name (``Offset``); this keeps `offset + 1` checked anyway.
        var start = ""
        if let offset {
            let (next, overflow) = offset.addingReportingOverflow(1)
            guard !overflow, next > 0 else { throw BrokerError(.failed, "there is no history after offset \(offset)") }
            start = "\(next)-0"
        }
        let reply = try await run(
            historyScript, keys: [RedisKeys.meta(channel), RedisKeys.history(channel)],
            arguments: [.string(start), .integer(max(1, limit))], commands: commands, scripts: scripts
        )
        guard let parts = reply.array, parts.count == 4 else { throw BrokerError(.failed, "Redis answered the history script with \(reply)") }
        let epoch = parts[0].string
        let lastOffset = parts[1].integer ?? 0
        let oldest = parts[2].array?.first.flatMap { entryOffset($0) }
        var messages = (parts[3].array ?? []).compactMap { entry -> Message? in
            guard let epoch, let fields = entry.array, fields.count == 2, let offset = entryOffset(entry), let values = fields[1].array else { return nil }
            var time: Int64 = 0
            var data: ByteBuffer?
            var name: String?
            for index in stride(from: 0, to: values.count - 1, by: 2) {
                switch values[index].string {
                case "t": time = values[index + 1].integer ?? 0
                case "d": if case .bulkString(let bytes) = values[index + 1] { data = bytes }
                case "n": name = values[index + 1].string
                default: break
                }
            }
            guard let data else { return nil }
            return Message(channel: channel, offset: offset, epoch: epoch, time: time, data: data, name: name)
        }
        if offset == nil { messages.reverse() }
        return History(channel: channel, epoch: epoch, lastOffset: lastOffset, firstOffset: oldest, messages: messages)
    }

    private static func entryOffset(_ entry: RESPValue) -> Int64? {
        guard let id = entry.array?.first?.string, let dash = id.firstIndex(of: "-") else { return nil }
        return Int64(id[..<dash])
    }

    /// Runs a script by its SHA when Redis has it, in full otherwise.
    private static func run(
        _ script: String,
        keys: [String],
        arguments: [RedisArgument],
        commands: Commands,
        scripts: NIOLockedValueBox<[String: String]>
    ) async throws -> RESPValue {
        let tail: [RedisArgument] = [.integer(keys.count)] + keys.map { .string($0) } + arguments
        do {
            if let sha = scripts.withLockedValue({ $0[script] }) {
                do {
                    return try await commands.send(RedisCommand("EVALSHA", [.string(sha)] + tail), key: keys[0])
                } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
                    // Redis lost its script cache (restart, SCRIPT FLUSH): EVAL caches it again.
                }
            }
            return try await commands.send(RedisCommand("EVAL", [.string(script)] + tail), key: keys[0])
        } catch let error as RedisError {
            switch error.code {
            case .server: throw BrokerError(.failed, "Redis refused the request: \(error.message)")
            case .timeout, .connectionClosed: throw BrokerError(.unconfirmed, "Redis did not answer (\(error.message))")
            default: throw BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
            }
        }
    }

    private static func reason(_ error: any Error) -> String {
        (error as? RedisError)?.message ?? "\(error)"
    }
}

/// The highest offset an instance has seen per channel (published or delivered), with
/// its epoch. Bounded: past 100,000 channels it starts over, which only weakens the
/// fence for channels this instance neither serves nor publishes to lately.
final class HighWater: Sendable {
    private let marks = NIOLockedValueBox([ChannelName: (epoch: String, offset: Int64)]())
    static let limit = 100_000

    func fence(of channel: ChannelName) -> (epoch: String, offset: Int64)? {
        marks.withLockedValue { $0[channel] }
    }

    func record(_ channel: ChannelName, epoch: String, offset: Int64) {
        marks.withLockedValue { Self.raise(&$0, channel, epoch: epoch, offset: offset) }
    }

    /// Records a batch of delivered events under one lock.
    func record(_ events: [ChatEvent]) {
        marks.withLockedValue { marks in
            for event in events {
                switch event {
                case .message(let message): Self.raise(&marks, message.channel, epoch: message.epoch, offset: message.offset)
                case .reset(let channel, let epoch): marks[channel] = (epoch, 0)
                default: break
                }
            }
        }
    }

    private static func raise(_ marks: inout [ChannelName: (epoch: String, offset: Int64)], _ channel: ChannelName, epoch: String, offset: Int64) {
        if let mark = marks[channel], mark.epoch == epoch, mark.offset >= offset { return }
        if marks.count >= limit { marks.removeAll(keepingCapacity: true) }
        marks[channel] = (epoch, offset)
    }
}
