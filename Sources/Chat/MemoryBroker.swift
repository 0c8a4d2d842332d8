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
    private let presence = NIOLockedValueBox([ChannelName: Set<String>]())

    /// Creates a broker that hands every published message to `deliver`.
    public init(history policy: HistoryPolicy = HistoryPolicy(), deliver: @escaping @Sendable ([ChatEvent]) -> Void) {
        self.policy = policy
        self.deliver = deliver
    }

    public func publish(_ data: ByteBuffer, name: String?, to channel: ChannelName) async throws -> Message {
        // Deliver under the lock so that messages reach the hub in offset order.
        channels.withLockedValue { channels in
            if let state = channels[channel], !isCurrent(state) { channels[channel] = nil }
            // Mutated in place: a copy of the state would copy the whole ring on every publish.
            let message = Self.append(data, name: name, to: &channels[channel, default: ChannelState()], channel: channel, capacity: max(policy.size, 1))
            deliver([.message(message)])
            return message
        }
    }

    /// One instance: the ids are counted as they come and go; nothing expires.
    public func updatePresence(of channel: ChannelName, adding: [String], removing: [String], lifetime: Duration) async throws -> Int {
        presence.withLockedValue { presence in
            var present = presence[channel, default: []]
            present.formUnion(adding)
            present.subtract(removing)
            presence[channel] = present.isEmpty ? nil : present
            return present.count
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
