import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A broker inside the process, for a single instance without Redis.
///
/// Each channel keeps a ring of its newest messages (``HistoryPolicy/size``), with the
/// same offset and epoch rules as Redis. The history does not outlive the process: after
/// a restart every channel starts a new epoch.
public final class MemoryBroker: Broker {
    private struct ChannelState {
        var epoch = Epoch.make()
        var lastOffset: Int64 = 0
        var ring: [Message] = []
        var ringStart = 0
        var lastPublished = ContinuousClock.now

        /// Kept messages, oldest first.
        var kept: [Message] { Array(ring[ringStart...] + ring[..<ringStart]) }

        mutating func append(_ message: Message, capacity: Int) {
            if ring.count < capacity {
                ring.append(message)
            } else {
                ring[ringStart] = message
                ringStart = (ringStart + 1) % capacity
            }
        }
    }

    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let policy: HistoryPolicy
    private let channels = NIOLockedValueBox([ChannelName: ChannelState]())
    private let rooms = NIOLockedValueBox([ChannelName: Room]())
    private let secrets = NIOLockedValueBox([String: String]())
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

    public func publish(_ data: ByteBuffer, name: String?, to channel: ChannelName, options: PublishOptions) async throws -> Publication {
        let now = ContinuousClock.now
        // Deliver under the lock so that messages reach the hub in offset order.
        return try channels.withLockedValue { channels throws(BrokerError) in
            let key = options.idempotencyKey.map { channel.rawValue + "|" + $0 }
            if let key, let first = sent.withLockedValue({ $0.first(key, now: now) }) {
                return Publication(message: Message(channel: channel, offset: first.offset, epoch: first.epoch, time: first.time, data: data, name: name), isRepeat: true)
            }
            var created = false
            if channels[channel].map(isCurrent) != true {
                guard options.mayCreateChannel else { throw BrokerError(.newChannelRefused, "the channel \(channel) does not exist") }
                sweepIdleChannels(&channels, now: now)
                channels[channel] = ChannelState()
                created = true
            }
            // Mutated in place: a copy of the state would copy the whole ring on every publish.
            let message = Self.append(data, name: name, to: &channels[channel]!, channel: channel, capacity: max(policy.size, 1))
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

    private static func append(_ data: ByteBuffer, name: String?, to state: inout ChannelState, channel: ChannelName, capacity: Int) -> Message {
        state.lastOffset += 1
        state.lastPublished = .now
        let message = Message(channel: channel, offset: state.lastOffset, epoch: state.epoch, time: Epoch.nowMilliseconds(), data: data, name: name)
        state.append(message, capacity: capacity)
        return message
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
