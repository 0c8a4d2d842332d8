import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A broker inside the process, for a single instance without Redis.
///
/// Each channel keeps a ring of its newest messages (``HistoryPolicy/size``, and with an
/// archive what it does not have yet), with the same offset and epoch rules as Redis. The history does not outlive the process: after
/// a restart every channel starts a new epoch.
public final class MemoryBroker: Broker {
    private struct ChannelState {
        var epoch = Epoch.make()
        var lastOffset: Int64 = 0
        /// Kept messages, oldest first, without holes (every publish appends).
        var ring = CircularBuffer<Message>()
        /// The newest offset the archive has (0: none yet, or no archive).
        var archived: Int64 = 0
        /// Messages the ring let go before the archive had them (its backlog was full),
        /// not told to the archiver yet.
        var lostToArchive = 0
        /// The newest offset handed to the archiver in a batch.
        var handedOut: Int64 = 0
        var lastPublished = ContinuousClock.now

        /// Kept messages, oldest first.
        var kept: [Message] { Array(ring) }

        mutating func append(_ message: Message, policy: HistoryPolicy) {
            ring.append(message)
            trim(policy)
        }

        /// Down to the history size; with an archive, what it does not have yet stays,
        /// up to its backlog (as the Redis broker cuts its stream).
        mutating func trim(_ policy: HistoryPolicy) {
            let archiving = policy.archiveBacklog != nil
            while let first = ring.first,
                ring.count > policy.streamLength || (ring.count > max(policy.size, 1) && (!archiving || first.offset <= archived))
            {
                // Handed to the archiver already (its batch holds them), or deleted (the
                // archive takes the delete): not lost.
                if archiving, first.offset > max(archived, handedOut), first.kind != .message || first.state?.deleted != true {
                    lostToArchive += 1
                }
                ring.removeFirst()
            }
        }

        /// Where in the ring the message at `offset` is, if it is kept.
        func place(of offset: Int64) -> CircularBuffer<Message>.Index? {
            let first = lastOffset - Int64(ring.count) + 1
            guard offset >= first, offset <= lastOffset else { return nil }
            return ring.index(ring.startIndex, offsetBy: Int(offset - first))
        }
    }

    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let policy: HistoryPolicy
    private let channels = NIOLockedValueBox([ChannelName: ChannelState]())
    private let rooms = NIOLockedValueBox([ChannelName: Room]())
    /// How far each identity has read each channel.
    private let reads = NIOLockedValueBox([ChannelName: [String: Int64]]())
    private let secrets = NIOLockedValueBox([String: String]())
    /// Each room's moderation, and while slow mode is on when each person last posted
    /// (Unix ms). Apart from the channels: it outlives a new epoch (and is lost, like
    /// everything here, when the process ends).
    private let moderations = NIOLockedValueBox([ChannelName: Moderated]())

    private struct Moderated {
        var room = RoomModeration()
        var lastPosts: [String: Int64] = [:]
    }
    /// Channels with messages the archive does not have yet.
    let archiveQueue = ArchiveQueue()
    /// Idempotency keys of recent publishes (`<channel>|<key>`).
    private let sent = NIOLockedValueBox(RecentKeys<Sent>())
    private let lastSweep = NIOLockedValueBox(ContinuousClock.now)

    /// What a repeat of a publish answers.
    private struct Sent: Sendable {
        var offset: Int64
        var epoch: String
        var time: Int64
    }

    /// A room's leases (`instance|id` → end) and names, as the Redis broker keeps them.
    private struct Room {
        var leases: [String: ContinuousClock.Instant] = [:]
        var names: [String: String] = [:]

        mutating func prune(_ now: ContinuousClock.Instant) {
            leases = leases.filter { $0.value > now }
        }

        var people: [String] {
            var seen = Set<String>()
            return leases.keys.sorted().compactMap { lease in
                guard let bar = lease.firstIndex(of: "|") else { return nil }
                let id = String(lease[lease.index(after: bar)...])
                return seen.insert(id).inserted ? id : nil
            }
        }
    }

    /// Creates a broker that hands every published message to `deliver`.
    public init(history policy: HistoryPolicy = HistoryPolicy(), deliver: @escaping @Sendable ([ChatEvent]) -> Void) {
        self.policy = policy
        self.deliver = deliver
    }

    public func publish(_ request: PublishRequest) async throws -> Publication {
        try publishNow(request)
    }

    public func publish(_ batch: [PublishRequest]) async -> [Result<Publication, BrokerError>] {
        publishNow(batch)
    }

    /// Answered at once: the memory broker never waits.
    public func publish(_ batch: [PublishRequest], on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, BrokerError>]> {
        eventLoop.makeSucceededFuture(publishNow(batch))
    }

    /// One message after another, as ``Broker/publish(_:)-batch`` promises: a channel's
    /// messages after one that failed are not attempted.
    private func publishNow(_ batch: [PublishRequest]) -> [Result<Publication, BrokerError>] {
        var failed: Set<ChannelName> = []
        return batch.map { request in
            guard !failed.contains(request.channel) else { return .failure(BrokerError.notAttempted) }
            do {
                return .success(try publishNow(request))
            } catch {
                let error = error as? BrokerError ?? BrokerError(.failed, "\(error)")
                if error.stopsTheChannel { failed.insert(request.channel) }
                return .failure(error)
            }
        }
    }

    private func publishNow(_ request: PublishRequest) throws -> Publication {
        let now = ContinuousClock.now
        let (channel, options) = (request.channel, request.options)
        // Deliver under the lock so that messages reach the hub in offset order.
        return try channels.withLockedValue { channels throws(BrokerError) in
            let key = options.idempotencyKey.map { channel.rawValue + "|" + $0 }
            if let key, let first = sent.withLockedValue({ $0.first(key, now: now) }) {
                let message = Message(
                    channel: channel, offset: first.offset, epoch: first.epoch, time: first.time, data: request.data, name: request.name,
                    from: request.from, kind: request.kind
                )
                return Publication(message: message, isRepeat: true)
            }
            var created = false
            var kind = request.kind
            let time = Epoch.nowMilliseconds()
            let refusal = moderations.withLockedValue { moderations -> BrokerError? in
                guard let moderated = moderations[channel] else { return nil }
                return moderated.room.refusal(
                    from: request.from, kind: request.kind, exempt: request.moderator, lastPost: moderated.lastPosts[request.from ?? ""], now: time
                )
            }
            if let refusal { throw refusal }
            if request.kind != .message {
                guard channels[channel].map(isCurrent) == true else { throw BrokerError(.refused(status: 404), "The channel has no messages.") }
                kind = try Self.change(&channels[channel]!, with: request, editWindow: policy.editWindow)
            } else if channels[channel].map(isCurrent) != true {
                guard options.mayCreateChannel else { throw BrokerError(.newChannelRefused, "the channel \(channel) does not exist") }
                sweepIdleChannels(&channels, now: now)
                channels[channel] = ChannelState()
                // A new epoch: read states of the old one mean nothing in it.
                reads.withLockedValue { _ = $0.removeValue(forKey: channel) }
                created = true
            }
            // Mutated in place: a copy of the state would copy the whole ring on every publish.
            let message = Self.append(request, kind: kind, to: &channels[channel]!, policy: policy)
            if policy.archiveBacklog != nil { archiveQueue.add(channel, first: true) }
            if kind == .message, !request.moderator, let from = request.from {
                moderations.withLockedValue { moderations in
                    if moderations[channel]?.room.slowMode ?? 0 > 0 { moderations[channel]!.lastPosts[from] = time }
                }
            }
            if let key {
                sent.withLockedValue { $0.remember(key, Sent(offset: message.offset, epoch: message.epoch, time: message.time), until: now + policy.dedupeWindow) }
            }
            deliver([.message(message)])
            return Publication(message: message, createdChannel: created)
        }
    }

    /// Drops channels past their time to live, at most once a minute (on a channel's
    /// creation), so that channels nobody writes to any more do not stay in memory.
    private func sweepIdleChannels(_ channels: inout [ChannelName: ChannelState], now: ContinuousClock.Instant) {
        guard policy.timeToLive != nil, now - lastSweep.withLockedValue({ $0 }) >= .seconds(60) else { return }
        lastSweep.withLockedValue { $0 = now }
        channels = channels.filter { isCurrent($0.value) }
        let kept = channels
        reads.withLockedValue { reads in reads = reads.filter { kept[$0.key] != nil } }
    }

    public func updatePresence(
        of channel: ChannelName, instance: String, refreshing: [Member], leaving: [String],
        lifetime: Duration, grace: Duration, listLimit: Int
    ) async throws -> RoomSnapshot {
        let now = ContinuousClock.now
        return rooms.withLockedValue { rooms in
            var room = rooms[channel] ?? Room()
            room.prune(now)
            for member in refreshing {
                room.leases[instance + "|" + member.id] = now + lifetime
                room.names[member.id] = member.name
            }
            for id in leaving where room.leases[instance + "|" + id] != nil {
                room.leases[instance + "|" + id] = now + grace
            }
            guard listLimit >= 0 else {
                rooms[channel] = room
                return RoomSnapshot(online: -1, members: nil)
            }
            let people = room.people
            room.names = room.names.filter { people.contains($0.key) }
            rooms[channel] = room.leases.isEmpty ? nil : room
            guard people.count <= listLimit else { return RoomSnapshot(online: people.count, members: nil) }
            return RoomSnapshot(online: people.count, members: people.map { Member(id: $0, name: room.names[$0]) })
        }
    }

    public func typing(_ member: Member, in channel: ChannelName) async throws {
        deliver([.typing(channel: channel, member: member)])
    }

    public func markRead(_ member: Member, in channel: ChannelName, upTo offset: Int64) async throws -> Int64 {
        // Under the channels' lock, as a publish takes it, so that a new epoch cannot come
        // between the last offset and the state kept.
        channels.withLockedValue { channels in
            let last = channels[channel].map { isCurrent($0) ? $0.lastOffset : 0 } ?? 0
            return reads.withLockedValue { reads in
                let stored = reads[channel]?[member.id] ?? 0
                let wanted = min(offset, last)
                guard wanted > stored else { return stored }
                reads[channel, default: [:]][member.id] = wanted
                deliver([.read(channel: channel, member: member, offset: wanted)])
                return wanted
            }
        }
    }

    public func readStates(of ids: [String], in channel: ChannelName) async throws -> [String: Int64] {
        reads.withLockedValue { reads in
            guard let channel = reads[channel] else { return [:] }
            var states: [String: Int64] = [:]
            for id in ids { states[id] = channel[id] }
            return states
        }
    }

    public func admit(_ member: String, to channel: ChannelName, instance: String, cap: Int, lifetime: Duration) async throws -> Bool {
        let now = ContinuousClock.now
        return rooms.withLockedValue { rooms in
            var room = rooms[channel] ?? Room()
            room.prune(now)
            let people = room.people
            guard people.contains(member) || people.count < cap else { return false }
            let lease = instance + "|" + member
            room.leases[lease] = max(room.leases[lease] ?? now, now + lifetime)
            rooms[channel] = room
            return true
        }
    }

    /// One process: the first proposal is kept for its lifetime.
    public func sharedSecret(named name: String, proposed: String) async throws -> String {
        secrets.withLockedValue { secrets in
            if let stored = secrets[name] { return stored }
            secrets[name] = proposed
            return proposed
        }
    }

    public func history(of channel: ChannelName, after offset: Int64?, limit: Int) async throws -> History {
        channels.withLockedValue { channels in
            guard let state = channels[channel].map(current), state.lastOffset > 0 else {
                return History(channel: channel, epoch: nil, lastOffset: 0, firstOffset: nil, messages: [])
            }
            let kept = state.kept
            let messages: [Message]
            if let offset {
                messages = Array(kept.filter { $0.offset > offset }.prefix(limit))
            } else {
                messages = Array(kept.suffix(limit))
            }
            return History(channel: channel, epoch: state.epoch, lastOffset: state.lastOffset, firstOffset: kept.first?.offset, messages: messages)
        }
    }

    private static func append(_ request: PublishRequest, kind: MessageKind, to state: inout ChannelState, policy: HistoryPolicy) -> Message {
        state.lastOffset += 1
        state.lastPublished = .now
        let message = Message(
            channel: request.channel, offset: state.lastOffset, epoch: state.epoch, time: Epoch.nowMilliseconds(), data: request.data,
            name: request.name, from: request.from, kind: kind
        )
        state.append(message, policy: policy)
        return message
    }

    /// Checks a change against its message and makes it, with the rules of the Redis
    /// broker's publish script; returns the kind to publish (a reaction's toggle decided).
    private static func change(_ state: inout ChannelState, with request: PublishRequest, editWindow: Duration) throws(BrokerError) -> MessageKind {
        guard let of = request.kind.target, let place = state.place(of: of) else {
            throw BrokerError(.refused(status: 404), "Message \(request.kind.target ?? 0) is not in the history of the channel.")
        }
        var target = state.ring[place]
        guard target.kind == .message else { throw BrokerError(.refused(status: 404), "Offset \(of) is a change to a message, not a message.") }
        guard target.state?.deleted != true else { throw BrokerError(.refused(status: 403), "Message \(of) was deleted.") }
        var final = target.state ?? MessageState()
        var kind = request.kind
        let now = Epoch.nowMilliseconds()
        switch request.kind {
        case .message:
            return .message
        case .edit, .delete:
            let verb = if case .edit = request.kind { "edit" } else { "delete" }
            // A moderator may delete anyone's message.
            let moderatorDeletes = request.moderator && verb == "delete"
            guard moderatorDeletes || (request.from != nil && target.from == request.from) else {
                throw BrokerError(.refused(status: 403), "Only its author may \(verb) message \(of).")
            }
            if case .edit = request.kind {
                guard now <= target.time + Int64(editWindow / .milliseconds(1)) else {
                    throw BrokerError(
                        .refused(status: 403),
                        "Message \(of) can no longer be edited: messages can be edited for \(Int64(editWindow / .seconds(1))) s after they are sent."
                    )
                }
                final.edited = now
                target.data = request.data
            } else {
                final.deleted = true
                final.edited = nil
                final.reactions = []
                target.data = ByteBuffer()
                // Its edits' text goes too.
                for index in state.ring.indices where state.ring[index].kind == .edit(of: of) {
                    state.ring[index].data = ByteBuffer()
                    state.ring[index].state = MessageState(deleted: true)
                }
            }
        case .react:
            guard let from = request.from else { throw BrokerError(.refused(status: 403), "Only a person with an identity may react.") }
            guard let on = final.toggle(String(buffer: request.data), from: from) else {
                let full = final.reactors >= MessageState.maximumReactors
                throw BrokerError(
                    .refused(status: 400),
                    full
                        ? "Message \(of) has \(final.reactors) reactions already, the most one message holds."
                        : "Message \(of) has \(final.reactions.count) different reactions already, the most one message holds."
                )
            }
            kind = .react(of: of, on: on)
        }
        target.state = final
        state.ring[place] = target
        return kind
    }

    /// Whether a channel's state is still within its time to live.
    private func isCurrent(_ state: ChannelState) -> Bool {
        guard let ttl = policy.timeToLive else { return true }
        return ContinuousClock.now - state.lastPublished <= ttl
    }

    /// The channel's state, or a fresh one (new epoch) if it never existed or outlived its time to live.
    private func current(_ state: ChannelState?) -> ChannelState {
        guard let state, isCurrent(state) else { return ChannelState() }
        return state
    }

    public func moderate(_ action: ModerationAction, in channel: ChannelName) async throws -> ModerationOutcome {
        let now = Epoch.nowMilliseconds()
        let outcome: ModerationOutcome? = moderations.withLockedValue { moderations in
            var moderated = moderations[channel] ?? Moderated()
            // A new mute or ban in a room that holds as many as it may is refused.
            let entries = moderated.room.mutes.count + moderated.room.bans.count
            switch action {
            case .mute(let user, let seconds) where seconds > 0 && moderated.room.mutes[user] == nil && entries >= RoomModeration.maximumEntries:
                return nil
            case .ban(let user, _) where moderated.room.bans[user] == nil && entries >= RoomModeration.maximumEntries:
                return nil
            default:
                break
            }
            let change: ModerationChange?
            switch action {
            case .mute(let user, let seconds): change = .muted(user, until: seconds > 0 ? now + Int64(seconds) * 1000 : 0)
            case .ban(let user, let seconds): change = .banned(user, until: seconds > 0 ? now + Int64(seconds) * 1000 : 0)
            case .unban(let user): change = .unbanned(user)
            case .slowMode(let seconds): change = .slowMode(seconds: seconds)
            case .defaultSlowMode(let seconds): change = moderated.room.slowMode == nil && seconds > 0 ? .slowMode(seconds: seconds) : nil
            }
            if let change { moderated.room.apply(change) }
            // What ended goes, as Redis drops the fields.
            moderated.room.mutes = moderated.room.mutes.filter { $0.value > now }
            moderated.room.bans = moderated.room.bans.filter { $0.value == 0 || $0.value > now }
            if (moderated.room.slowMode ?? 0) == 0 { moderated.lastPosts = [:] }
            moderations[channel] = moderated.room.isEmpty(now: now) ? nil : moderated
            return ModerationOutcome(change: change, room: moderated.room)
        }
        guard let outcome else { throw BrokerError(.refused(status: 409), RoomModeration.fullWords, reason: "moderation_full") }
        if let change = outcome.change { deliver([.moderation(channel: channel, change: change)]) }
        return outcome
    }

    public func moderation(of channel: ChannelName) async throws -> RoomModeration {
        let now = Epoch.nowMilliseconds()
        var room = moderations.withLockedValue { $0[channel]?.room } ?? RoomModeration()
        room.mutes = room.mutes.filter { $0.value > now }
        room.bans = room.bans.filter { $0.value == 0 || $0.value > now }
        return room
    }

    /// Always ready: nothing outside the process.
    public func notReadyReason() async -> String? { nil }

    public func join(_ channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededVoidFuture()
    }

    public func leave(_ channel: ChannelName) {}

    public func start() async throws {}

    public func close() {}

    public var services: [any Service] { [] }

    public var description: String { "memory" }
}

/// The archive's feed from the rings: each channel's messages after what the archive
/// has, in offset order; its ring keeps them until the archive has them (up to
/// ``HistoryPolicy/archiveBacklog``). One process, so one archiver: a batch not
/// acknowledged is handed out again.
extension MemoryBroker: ArchiveFeed {
    public func take(_ limit: Int, for archiver: String) async throws -> [ArchiveBatch] {
        let candidates = archiveQueue.next(ArchiveQueue.channelsPerTake)
        return channels.withLockedValue { channels in
            candidates.compactMap { channel -> ArchiveBatch? in
                guard let state = channels[channel], let first = state.ring.first, state.archived < state.lastOffset,
                    let start = state.place(of: max(state.archived + 1, first.offset))
                else {
                    archiveQueue.remove(channel)
                    return nil
                }
                var batch = ArchiveBatch(channel: channel, messages: [], entries: [])
                batch.lost = state.lostToArchive
                channels[channel]!.lostToArchive = 0
                var handedOut = state.handedOut
                defer { channels[channel]!.handedOut = handedOut }
                for message in state.ring[start...].prefix(max(1, limit)) {
                    batch.entries.append("\(state.epoch) \(message.offset)")
                    handedOut = max(handedOut, message.offset)
                    // A deleted message has lost its text for good: its delete keeps its
                    // place. The rest as published (an edit of a deleted message without
                    // its words): its changes follow it.
                    guard message.kind != .message || message.state?.deleted != true else { continue }
                    var published = message
                    published.state = nil
                    batch.messages.append(published)
                }
                return batch
            }
        }
    }

    public func archived(_ batch: ArchiveBatch, by archiver: String) async throws {
        guard let last = batch.entries.last?.split(separator: " "), last.count == 2, let offset = Int64(last[1]) else { return }
        let epoch = String(last[0])
        channels.withLockedValue { channels in
            // A channel started again since (a new epoch) has nothing of this batch.
            guard channels[batch.channel]?.epoch == epoch else { return }
            channels[batch.channel]!.archived = max(channels[batch.channel]!.archived, offset)
            channels[batch.channel]!.trim(policy)
        }
    }

    public func due(_ channel: ChannelName) {
        archiveQueue.add(channel, first: true)
    }

    public func waitForMessages(upTo timeout: Duration) async {
        await archiveQueue.waitForChannels(upTo: timeout)
    }
}

/// Makes epochs and timestamps.
enum Epoch {
    /// A new random epoch: 16 hex digits.
    static func make() -> String {
        let value = UInt64.random(in: 0...UInt64.max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Milliseconds since 1970.
    static func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
