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
    let commands: Commands
    /// History reads, on connections of their own: a large read must never hold up a
    /// publish queued behind it.
    private let reads: Commands
    private let pubsub: PubSub
    private let sequencer: ChannelSequencer
    let policy: HistoryPolicy
    /// With an archive: the channels to hand it (see ``take(_:for:)``).
    let archiveQueue = ArchiveQueue()
    private let logger: Logger
    let scripts: RedisScripts
    /// The highest offset this instance has seen per channel, with its epoch: the fence
    /// of the publish script.
    private let seen: HighestSeenOffsets
    /// The publish script of this target: PUBLISH, or SPUBLISH on a cluster.
    private let publishScript: String
    /// The read-state script of this target, which publishes the same way.
    private let readScript: String
    /// The moderation script of this target, which publishes the same way.
    private let moderateScript: String
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    private let publishCommand: String
    /// Fences of channels whose last writes Redis lost, run by a service of their own.
    private let fences: FenceQueue
    /// Where publishes from outside an event loop run their futures: the command
    /// connection's own loop.
    private let publishLoop: any EventLoop

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

        /// ``send(_:key:)`` without a task on one server: the future completes on the
        /// connection's loop. A cluster's goes through a task, completing on `eventLoop`.
        func sendFuture(_ command: RedisCommand, key: String, on eventLoop: any EventLoop) -> EventLoopFuture<RESPValue> {
            switch self {
            case .single(let client): client.sendFuture(command)
            case .cluster(let cluster): eventLoop.makeFutureWithTask { try await cluster.send(command, key: key) }
            }
        }

        /// The loop of the one server's connection; `nil` for a cluster.
        var loop: (any EventLoop)? {
            if case .single(let client) = self { client.loop } else { nil }
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
        let publishScript = switch target {
        case .single: Self.publishScript
        case .cluster: Self.shardedPublishScript
        }
        self.publishScript = publishScript
        let publishCommand = if case .cluster = target { "SPUBLISH" } else { "PUBLISH" }
        self.publishCommand = publishCommand
        let readScript = Self.readScript(publish: publishCommand)
        self.readScript = readScript
        let moderateScript = Self.moderateScript(publish: publishCommand)
        self.moderateScript = moderateScript
        // The subscriber takes a loop first, and the command connection the next: the
        // replies to publishes then do not queue behind the fan-out's input (with both on
        // one loop of two, fan-out at 1,000 sockets measured about 15% slower).
        let subscriberLoop = eventLoopGroup.next()
        let commands = Commands.make(target, eventLoopGroup: eventLoopGroup, logger: logger)
        let reads = Commands.make(target, eventLoopGroup: eventLoopGroup, logger: logger)
        let scripts = RedisScripts(
            [
                publishScript, Self.historyScript, Self.presenceScript, Self.admitScript, Self.fenceScript, readScript, moderateScript,
                Self.archiveTakeScript, Self.archivedScript,
            ], logger: logger
        )
        commands.watch(role: "command", metrics: metrics, onConnect: scripts.load(on:))
        reads.watch(role: "history", metrics: metrics, onConnect: scripts.load(on:))
        self.commands = commands
        self.publishLoop = commands.loop ?? eventLoopGroup.next()
        self.reads = reads
        self.scripts = scripts
        self.seen = HighestSeenOffsets()
        self.fences = FenceQueue(commands: commands, scripts: scripts, logger: logger)
        self.sequencer = Self.makeSequencer(
            on: subscriberLoop, reads: reads, scripts: scripts, seen: seen, fences: fences, metrics: metrics, logger: logger, deliver: deliver
        )
        self.pubsub = Self.makePubSub(
            commands: commands, sequencer: sequencer, on: subscriberLoop, metrics: metrics, logger: logger, signals: deliver
        )
    }

    /// The sequencer between pub/sub and the hub: it reads holes from the history, counts
    /// gaps and reused offsets, and fences a channel whose last writes Redis lost.
    private static func makeSequencer(
        on eventLoop: any EventLoop, reads: Commands, scripts: RedisScripts, seen: HighestSeenOffsets, fences: FenceQueue, metrics: ChatMetrics,
        logger: Logger, deliver: @escaping @Sendable ([ChatEvent]) -> Void
    ) -> ChannelSequencer {
        ChannelSequencer(
            eventLoop: eventLoop,
            fetch: { channel, offset in
                // Without an offset: where the channel stands (its newest message alone).
                try await Self.readHistory(commands: reads, scripts: scripts, channel: channel, after: offset, limit: offset == nil ? 1 : 10_000)
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
            behind: { channel, epoch, offset in fences.fence(channel, epoch: epoch, after: offset) }
        )
    }

    /// The subscriber of the target: one pub/sub connection, or sharded pub/sub per
    /// cluster primary. Its messages go through `sequencer`.
    /// Signals (``Signal``: typing, read state) skip the sequencer: they have no offset.
    private static func makePubSub(
        commands: Commands, sequencer: ChannelSequencer, on eventLoop: any EventLoop, metrics: ChatMetrics, logger: Logger,
        signals: @escaping @Sendable ([ChatEvent]) -> Void
    ) -> PubSub {
        let received: RedisSubscriber.MessageHandler = { pubsub in
            var messages: [Message] = []
            var signalled: [ChatEvent] = []
            messages.reserveCapacity(pubsub.count)
            for item in pubsub {
                if Signal.isSignal(item.payload), let channel = RedisKeys.channel(ofMessages: item.channel),
                    let event = Signal.event(channel: channel, payload: item.payload)
                {
                    signalled.append(event)
                    continue
                }
                guard let channel = RedisKeys.channel(ofMessages: item.channel),
                    let message = Message(channel: channel, envelope: item.payload)
                else {
                    logger.warning("Ignored a malformed message from Redis", metadata: ["redis.channel": "\(item.channel)"])
                    metrics.dropped(.malformed)
                    continue
                }
                messages.append(message)
            }
            if !messages.isEmpty { sequencer.receive(messages) }
            if !signalled.isEmpty { signals(signalled) }
        }
        let caughtUp: RedisSubscriber.ResubscribeHandler = { names in
            sequencer.resubscribed(Set(names.compactMap(RedisKeys.channel(ofMessages:))))
        }
        switch commands {
        case .single(let client):
            let subscriber = RedisSubscriber(configuration: client.configuration, eventLoop: eventLoop, logger: logger, onMessages: received)
            subscriber.onResubscribe(caughtUp)
            let node = client.configuration.description
            subscriber.onStateChange { connected, isReconnect in
                metrics.redisConnection("pubsub", node: node, connected: connected, reconnected: isReconnect)
            }
            return .single(subscriber)
        case .cluster(let cluster):
            let subscriber = RedisShardedSubscriber(cluster: cluster, eventLoop: eventLoop, logger: logger, onMessages: received)
            subscriber.onResubscribe(caughtUp)
            subscriber.onStateChange { node, connected, isReconnect in
                metrics.redisConnection("pubsub", node: node, connected: connected, reconnected: isReconnect)
            }
            return .sharded(subscriber)
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

    public func close() {
        shutdown()
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
        case .single(let subscriber): commands.services + reads.services + [subscriber, fences]
        case .sharded(let subscriber): commands.services + reads.services + subscriber.services + [fences]
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

    public func publish(_ request: PublishRequest) async throws -> Publication {
        try await publish(run: [request], to: request.channel, on: publishLoop).get()[0].get()
    }

    /// Most messages one script publishes: a run holds Redis for all of them.
    static let largestRun = 64

    public func publish(_ batch: [PublishRequest]) async -> [Result<Publication, BrokerError>] {
        // The future never fails: each message's failure is in its result.
        (try? await publish(batch, on: publishLoop).get()) ?? batch.map { _ in .failure(BrokerError.notAttempted) }
    }

    /// Each channel's messages in runs of one script each, in order; the channels side
    /// by side, so their scripts go to Redis pipelined on one connection. No task: the
    /// scripts are written from the caller's loop and answered on it.
    public func publish(_ batch: [PublishRequest], on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, BrokerError>]> {
        var order: [ChannelName] = []
        var places: [ChannelName: [Int]] = [:]
        for (index, request) in batch.enumerated() {
            if places[request.channel] == nil { order.append(request.channel) }
            places[request.channel, default: []].append(index)
        }
        let channels = order.map { channel in publishRuns(places[channel]!, of: batch, to: channel, from: 0, answered: [], on: eventLoop) }
        return EventLoopFuture.whenAllSucceed(channels, on: eventLoop).map { answered in
            var results = [Result<Publication, BrokerError>](repeating: .failure(BrokerError.notAttempted), count: batch.count)
            for (index, result) in answered.joined() { results[index] = result }
            return results
        }
    }

    /// The runs of one channel's messages (`indices` in `batch`) from `start`, one after
    /// the other; a run that fails stops the rest, which are not attempted.
    private func publishRuns(
        _ indices: [Int], of batch: [PublishRequest], to channel: ChannelName, from start: Int, answered: [(Int, Result<Publication, BrokerError>)],
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<[(Int, Result<Publication, BrokerError>)]> {
        guard start < indices.count else { return eventLoop.makeSucceededFuture(answered) }
        // A run asks once whether it may create the channel: messages of senders that
        // may and may not (a batch of several connections) go in runs of their own.
        let mayCreate = batch[indices[start]].options.mayCreateChannel
        var end = start + 1
        while end < min(indices.count, start + Self.largestRun), batch[indices[end]].options.mayCreateChannel == mayCreate { end += 1 }
        let run = Array(indices[start..<end])
        let next = end
        return publish(run: run.map { batch[$0] }, to: channel, on: eventLoop)
            .map { published -> (answers: [(Int, Result<Publication, BrokerError>)], stops: Bool) in
                let stops = published.contains { result in
                    if case .failure(let error) = result { error.stopsTheChannel } else { false }
                }
                return (zip(run, published).map { ($0, $1) }, stops)
            }
            .recover { error in
                let failure = error as? BrokerError ?? BrokerError(.failed, "\(error)")
                return (run.map { ($0, .failure(failure)) }, true)
            }
            .flatMap { step in
                guard !step.stops else { return eventLoop.makeSucceededFuture(answered + step.answers) }
                return self.publishRuns(indices, of: batch, to: channel, from: next, answered: answered + step.answers, on: eventLoop)
            }
    }

    /// Publishes messages of one channel with one script.
    private func publish(run: [PublishRequest], to channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, BrokerError>]> {
        let time = Epoch.nowMilliseconds()
        let ttl = policy.timeToLive.map(Self.milliseconds) ?? 0
        let fence = seen.fence(of: channel)
        var keys = [
            RedisKeys.meta(channel), RedisKeys.history(channel), RedisKeys.changes(channel), RedisKeys.reads(channel), RedisKeys.moderation(channel),
            RedisKeys.lastPosts(channel),
        ]
        var arguments: [RedisArgument] = [
            .string(RedisKeys.messages(channel)), .integer(time), .string(Epoch.make()), .integer(policy.streamLength), .integer(ttl),
            .string(fence?.epoch ?? ""), .integer(fence?.offset ?? 0), .string(run[0].options.mayCreateChannel ? "1" : "0"),
            .integer(Self.milliseconds(policy.dedupeWindow)), .integer(Self.milliseconds(policy.editWindow)),
        ]
        arguments.reserveCapacity(arguments.count + run.count * 6)
        for request in run {
            var keyIndex = 0
            if let key = request.options.idempotencyKey {
                keys.append(RedisKeys.sent(channel, key: key))
                keyIndex = keys.count
            }
            arguments += [
                .bytes(request.data), .string(request.name ?? ""), .integer(Int64(keyIndex)), .string(request.from ?? ""), .string(request.kind.token),
                .string(request.moderator ? "1" : "0"),
            ]
        }
        return Self.run(publishScript, keys: keys, arguments: arguments, commands: commands, scripts: scripts, on: eventLoop)
            .flatMapThrowing { reply in try self.publications(of: run, to: channel, from: reply) }
            .hop(to: eventLoop)
    }

    /// What the publish script answered, message by message.
    private func publications(of run: [PublishRequest], to channel: ChannelName, from reply: RESPValue) throws -> [Result<Publication, BrokerError>] {
        guard let answers = reply.array, answers.count == run.count else {
            throw BrokerError(.failed, "Redis answered the publish script with \(reply)")
        }
        return zip(run, answers).map { request, answer in
            guard let fields = answer.array, fields.count >= 9, let offset = fields[0].integer, let epoch = fields[1].string,
                let isRepeat = fields[3].integer, let created = fields[4].integer, let storedTime = fields[5].integer,
                let status = fields[6].integer, let kind = fields[8].string.flatMap({ MessageKind(token: $0) })
            else {
                return .failure(BrokerError(.failed, "Redis answered the publish script with \(answer)"))
            }
            if created < 0 { return .failure(BrokerError(.newChannelRefused, "the channel \(channel) does not exist")) }
            if status != 0 {
                // A moderation refusal adds its wait and its reason.
                var error = BrokerError(.refused(status: Int(status)), fields[7].string ?? "refused")
                if fields.count >= 11 {
                    error.retryAfter = fields[9].integer.flatMap { $0 > 0 ? Int($0) : nil }
                    error.reason = fields[10].string
                }
                return .failure(error)
            }
            if let raisedFrom = fields[2].integer, raisedFrom > 0 {
                logger.warning(
                    "Redis had lost the channel's last writes; offsets continue after the highest this instance saw",
                    metadata: ["channel": "\(channel)", "redis_offset": "\(raisedFrom)", "continued_after": "\(offset - 1)"]
                )
            }
            seen.record(channel, epoch: epoch, offset: offset)
            if policy.archiveBacklog != nil, isRepeat == 0 { due(channel) }
            let message = Message(
                channel: channel, offset: offset, epoch: epoch, time: storedTime, data: request.data, name: request.name, from: request.from, kind: kind
            )
            return .success(Publication(message: message, isRepeat: isRepeat == 1, createdChannel: created == 1))
        }
    }

    public func typing(_ member: Member, in channel: ChannelName) async throws {
        let name = RedisKeys.messages(channel)
        do {
            _ = try await commands.send(RedisCommand(publishCommand, .string(name), .string(Signal.typing(member))), key: RedisKeys.meta(channel))
        } catch let error as RedisError {
            throw BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
        }
    }

    public func markRead(_ member: Member, in channel: ChannelName, upTo offset: Int64) async throws -> Int64 {
        let ttl = policy.timeToLive.map(Self.milliseconds) ?? 0
        let reply = try await Self.run(
            readScript, keys: [RedisKeys.meta(channel), RedisKeys.reads(channel)],
            arguments: [.string(member.id), .integer(max(0, offset)), .integer(ttl), .string(RedisKeys.messages(channel)), .string(member.name ?? "")],
            commands: commands, scripts: scripts
        )
        guard let stored = reply.integer else { throw BrokerError(.failed, "Redis answered the read script with \(reply)") }
        return stored
    }

    public func readStates(of ids: [String], in channel: ChannelName) async throws -> [String: Int64] {
        guard !ids.isEmpty else { return [:] }
        let key = RedisKeys.reads(channel)
        let reply: RESPValue
        do {
            reply = try await commands.send(RedisCommand("HMGET", [.string(key)] + ids.map { .string($0) }), key: key)
        } catch let error as RedisError {
            throw BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
        }
        guard let values = reply.array, values.count == ids.count else { throw BrokerError(.failed, "Redis answered HMGET with \(reply)") }
        var states: [String: Int64] = [:]
        for (id, value) in zip(ids, values) {
            if let offset = value.integer { states[id] = offset }
        }
        return states
    }

    public func moderate(_ action: ModerationAction, in channel: ChannelName) async throws -> ModerationOutcome {
        let (what, user, seconds): (String, String, Int) = switch action {
        case .mute(let user, let seconds): ("m", user, seconds)
        case .ban(let user, let seconds): ("b", user, seconds)
        case .unban(let user): ("u", user, 0)
        case .slowMode(let seconds): ("s", "", seconds)
        case .defaultSlowMode(let seconds): ("S", "", seconds)
        }
        let reply = try await Self.run(
            moderateScript, keys: [RedisKeys.moderation(channel), RedisKeys.lastPosts(channel)],
            arguments: [.integer(Epoch.nowMilliseconds()), .string(what), .string(user), .integer(Int64(seconds)), .string(RedisKeys.messages(channel))],
            commands: commands, scripts: scripts
        )
        guard let parts = reply.array, parts.count >= 2, let changed = parts[0].integer, let until = parts[1].integer else {
            throw BrokerError(.failed, "Redis answered the moderation script with \(reply)")
        }
        if changed == -1 { throw BrokerError(.refused(status: 409), RoomModeration.fullWords, reason: "moderation_full") }
        let room = Self.room(Array(parts.dropFirst(2)), now: Epoch.nowMilliseconds())
        guard changed == 1 else { return ModerationOutcome(change: nil, room: room) }
        let change: ModerationChange = switch action {
        case .mute: .muted(user, until: until)
        case .ban: .banned(user, until: until)
        case .unban: .unbanned(user)
        case .slowMode(let seconds), .defaultSlowMode(let seconds): .slowMode(seconds: seconds)
        }
        return ModerationOutcome(change: change, room: room)
    }

    public func moderation(of channel: ChannelName) async throws -> RoomModeration {
        let key = RedisKeys.moderation(channel)
        let reply: RESPValue
        do {
            reply = try await commands.send(RedisCommand("HGETALL", .string(key)), key: key)
        } catch let error as RedisError {
            throw BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
        }
        guard let fields = reply.array else { throw BrokerError(.failed, "Redis answered HGETALL with \(reply)") }
        return Self.room(fields, now: Epoch.nowMilliseconds())
    }

    /// A room's moderation from the hash's fields and values, without what ended by `now`.
    private static func room(_ fields: [RESPValue], now: Int64) -> RoomModeration {
        var room = RoomModeration()
        var index = 0
        while index + 1 < fields.count {
            defer { index += 2 }
            guard let field = fields[index].string, let value = fields[index + 1].integer else { continue }
            if field == "slow" {
                room.slowMode = Int(value)
            } else if field.hasPrefix("b:"), value == 0 || value > now {
                room.bans[String(field.dropFirst(2))] = value
            } else if field.hasPrefix("m:"), value > now {
                room.mutes[String(field.dropFirst(2))] = value
            }
        }
        return room
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

    static func milliseconds(_ duration: Duration) -> Int64 {
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
        scripts: RedisScripts,
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
            historyScript, keys: [RedisKeys.meta(channel), RedisKeys.history(channel), RedisKeys.changes(channel)],
            arguments: [.string(start), .integer(max(1, limit))], commands: commands, scripts: scripts
        )
        guard let parts = reply.array, parts.count == 4 || parts.count == 5 else {
            throw BrokerError(.failed, "Redis answered the history script with \(reply)")
        }
        let epoch = parts[0].string
        let lastOffset = parts[1].integer ?? 0
        let oldest = parts[2].array?.first.flatMap { entryOffset($0) }
        var messages: [Message]
        if let epoch, parts.count == 5 {
            // Items in offset order, each with its state.
            messages = (parts[3].array ?? []).compactMap { item in
                guard let fields = item.array, fields.count == 3, let offset = entryOffset(item) else { return nil }
                return StoredEntry.message(channel: channel, offset: offset, epoch: epoch, fields: fields[1].array, state: fields[2].array)
            }
        } else {
            messages = (parts[3].array ?? []).compactMap { entry -> Message? in
                guard let epoch, let fields = entry.array, fields.count == 2, let offset = entryOffset(entry) else { return nil }
                return StoredEntry.message(channel: channel, offset: offset, epoch: epoch, fields: fields[1].array, state: nil)
            }
            if offset == nil { messages.reverse() }
        }
        return History(channel: channel, epoch: epoch, lastOffset: lastOffset, firstOffset: oldest, messages: messages)
    }

    private static func entryOffset(_ entry: RESPValue) -> Int64? {
        guard let id = entry.array?.first?.string, let dash = id.firstIndex(of: "-") else { return nil }
        return Int64(id[..<dash])
    }

    /// Runs a script on the node owning its first key; Redis' errors become ``BrokerError``s.
    static func run(
        _ script: String,
        keys: [String],
        arguments: [RedisArgument],
        commands: Commands,
        scripts: RedisScripts
    ) async throws -> RESPValue {
        do {
            return try await scripts.run(script, keys: keys, arguments: arguments) { command in
                try await commands.send(command, key: keys[0])
            }
        } catch {
            throw brokerError(error)
        }
    }

    /// ``run(_:keys:arguments:commands:scripts:)`` without a task.
    static func run(
        _ script: String, keys: [String], arguments: [RedisArgument], commands: Commands, scripts: RedisScripts, on eventLoop: any EventLoop
    ) -> EventLoopFuture<RESPValue> {
        scripts.run(script, keys: keys, arguments: arguments) { command in commands.sendFuture(command, key: keys[0], on: eventLoop) }
            .flatMapErrorThrowing { error in throw brokerError(error) }
    }

    /// A Redis failure as the broker reports it: refused, unconfirmed (it may have run) or unavailable.
    private static func brokerError(_ error: any Error) -> any Error {
        guard let error = error as? RedisError else { return error }
        switch error.code {
        case .server: return BrokerError(.failed, "Redis refused the request: \(error.message)")
        case .timeout, .connectionClosed: return BrokerError(.unconfirmed, "Redis did not answer (\(error.message))")
        default: return BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
        }
    }

    private static func reason(_ error: any Error) -> String {
        (error as? RedisError)?.message ?? "\(error)"
    }
}
