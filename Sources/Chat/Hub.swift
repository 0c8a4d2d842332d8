import NIOConcurrencyHelpers
import NIOCore

/// A socket (or anything else) that receives a channel's messages on this instance.
///
/// Members live on one event loop; the hub calls them only there.
public protocol HubMember: AnyObject {
    /// Queues one message for the member; `delivery` holds it encoded for the wire.
    func enqueue(_ delivery: Delivery)
    /// Writes out what ``enqueue(_:)`` queued: called once per batch of messages.
    func flush()
    /// The server is shutting down: say goodbye and close.
    func goAway()
    /// Called every heartbeat interval: ping the peer, or give up on one that stopped answering.
    func heartbeat(now: NIODeadline)
}

/// An event made ready for the wire once, shared by every member it goes to.
public struct Delivery: Sendable {
    /// The event.
    public let event: ChatEvent
    /// The event encoded in each wire format the server speaks, indexed by format;
    /// `nil` where a format has nothing to say about it.
    public let frames: [ByteBuffer?]
}

/// Local fan-out: channel → the members on this instance.
///
/// One ``LoopHub`` per event loop holds that loop's members, so delivering never takes
/// a lock and never hops per member. A batch of messages is encoded once by the
/// hub's `encode` closure, handed to each loop in one hop, written to each member of
/// the channel, and flushed once per member. The cost of a message is proportional
/// to the members of its channel, not to every member on the instance.
public final class Hub: Sendable {
    private let loops: [LoopHub]
    private let loopIndex: [ObjectIdentifier: LoopHub]
    private let encode: @Sendable (ChatEvent) -> [ByteBuffer?]

    /// Creates a hub over every loop of `eventLoopGroup`.
    /// - Parameter encode: makes the wire frames of an event, once per event.
    public init(eventLoopGroup: any EventLoopGroup, encode: @escaping @Sendable (ChatEvent) -> [ByteBuffer?]) {
        let loops = eventLoopGroup.makeIterator().map { LoopHub(eventLoop: $0) }
        self.loops = loops
        self.loopIndex = Dictionary(uniqueKeysWithValues: loops.map { (ObjectIdentifier($0.eventLoop), $0) })
        self.encode = encode
    }

    /// The part of the hub that serves `eventLoop`.
    public func loop(for eventLoop: any EventLoop) -> LoopHub {
        guard let hub = loopIndex[ObjectIdentifier(eventLoop)] else {
            preconditionFailure("\(eventLoop) is not in the hub's event loop group")
        }
        return hub
    }

    /// Delivers events to every member of their channels, in the order given.
    ///
    /// Each loop has an inbox: events are appended to it, and only the first append
    /// since the loop last drained it schedules a drain. Events that arrive while a
    /// loop is busy therefore go out together, with one flush per member — batching
    /// that grows with load instead of one hop and one write syscall per event.
    public func deliver(_ events: [ChatEvent]) {
        let deliveries = events.map { Delivery(event: $0, frames: encode($0)) }
        for loop in loops {
            loop.post(deliveries)
        }
    }

    /// Tells every member to go away; completes once each loop has told its members.
    public func goAway() -> EventLoopFuture<Void> {
        let futures = loops.map { loop in loop.eventLoop.submit { loop.goAway() } }
        guard let first = loops.first else { fatalError("a hub needs at least one event loop") }
        return EventLoopFuture.andAllSucceed(futures, on: first.eventLoop)
    }

    /// Calls ``HubMember/heartbeat(now:)`` on every member every `interval`: one timer per
    /// loop, not one per member.
    /// - Returns: the timers, to cancel at shutdown.
    public func startHeartbeats(every interval: TimeAmount) -> [RepeatedTask] {
        loops.map { loop in
            loop.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                loop.heartbeat(now: .now())
            }
        }
    }

    /// How many members each channel has on this instance.
    public func memberCounts() async -> [ChannelName: Int] {
        var total: [ChannelName: Int] = [:]
        for loop in loops {
            let counts = (try? await loop.eventLoop.submit { loop.memberCounts() }.get()) ?? [:]
            total.merge(counts, uniquingKeysWith: +)
        }
        return total
    }
}

/// The members served by one event loop. Use it only on that loop.
public final class LoopHub: @unchecked Sendable {
    /// The loop this part serves.
    public let eventLoop: any EventLoop
    private var channels: [ChannelName: [ObjectIdentifier: any HubMember]] = [:]
    /// Deliveries waiting for the loop, and whether a drain is already scheduled.
    private let inbox = NIOLockedValueBox<(deliveries: [Delivery], scheduled: Bool)>(([], false))

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Queues deliveries for this loop from any thread.
    func post(_ deliveries: [Delivery]) {
        let schedule = inbox.withLockedValue { inbox in
            inbox.deliveries.append(contentsOf: deliveries)
            defer { inbox.scheduled = true }
            return !inbox.scheduled
        }
        if schedule {
            eventLoop.execute { self.drain() }
        }
    }

    private func drain() {
        let deliveries = inbox.withLockedValue { inbox in
            defer {
                inbox.deliveries.removeAll(keepingCapacity: true)
                inbox.scheduled = false
            }
            return inbox.deliveries
        }
        deliver(deliveries)
    }

    /// Adds `member` to `channel`.
    public func add(_ member: any HubMember, to channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        channels[channel, default: [:]][ObjectIdentifier(member)] = member
    }

    /// Removes `member` from `channel`.
    public func remove(_ member: any HubMember, from channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        channels[channel]?[ObjectIdentifier(member)] = nil
        if channels[channel]?.isEmpty == true { channels[channel] = nil }
    }

    func deliver(_ deliveries: [Delivery]) {
        var touched: Set<ChannelName> = []
        for delivery in deliveries {
            let channel = delivery.event.channel
            guard let members = channels[channel] else { continue }
            touched.insert(channel)
            for member in members.values {
                member.enqueue(delivery)
            }
        }
        for channel in touched {
            for member in channels[channel]?.values ?? [:].values {
                member.flush()
            }
        }
    }

    func goAway() {
        let everyone = channels.values.flatMap(\.values)
        for member in everyone { member.goAway() }
    }

    func heartbeat(now: NIODeadline) {
        let everyone = channels.values.flatMap(\.values)
        for member in everyone { member.heartbeat(now: now) }
    }

    func memberCounts() -> [ChannelName: Int] {
        channels.mapValues(\.count)
    }
}
