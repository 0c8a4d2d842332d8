import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A broker inside the process, for a single instance without Redis.
///
/// Offsets and epochs follow the same rules as with Redis; the epoch is new each time
/// the process starts, because the history does not outlive it.
public final class MemoryBroker: Broker {
    private let deliver: @Sendable ([Message]) -> Void
    private let epoch: String
    private let offsets = NIOLockedValueBox([ChannelName: Int64]())

    /// Creates a broker that hands every published message to `deliver`.
    public init(deliver: @escaping @Sendable ([Message]) -> Void) {
        self.deliver = deliver
        self.epoch = Epoch.make()
    }

    public func publish(_ data: ByteBuffer, to channel: ChannelName) async throws -> Message {
        // Deliver under the lock so that messages reach the hub in offset order.
        offsets.withLockedValue { offsets in
            let offset = offsets[channel, default: 0] + 1
            offsets[channel] = offset
            let message = Message(channel: channel, offset: offset, epoch: epoch, time: Epoch.nowMilliseconds(), data: data)
            deliver([message])
            return message
        }
    }

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
