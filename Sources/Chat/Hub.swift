import NIOConcurrencyHelpers
import NIOCore

/// Where one loop's delivery of a channel stood when it was asked: see ``LoopHub/mark(of:)``.
public struct HubMark: Sendable, Equatable {
    /// Which entry of the channel's members on the loop.
    public var generation: UInt64
    /// The last message (or reset) drained to them, if any.
    public var drained: Position?

    public struct Position: Sendable, Equatable {
        public var epoch: String
        public var offset: Int64
    }

    init(generation: UInt64, drained: (epoch: String, offset: Int64)?) {
        self.generation = generation
        self.drained = drained.map { Position(epoch: $0.epoch, offset: $0.offset) }
    }
}

/// A connection the hub keeps alive and says goodbye to: a socket.
///
/// Connections live on one event loop; the hub calls them only there.
public protocol HubConnection: AnyObject {
    /// The server is shutting down: say goodbye and close.
    func goAway()
    /// Called every heartbeat interval: ping the peer, or give up on one that stopped answering.
    func heartbeat(now: NIODeadline)
}

/// A socket (or anything else) that receives a channel's messages on this instance.
///
/// A member of a channel is also told to go away and to beat; a socket of many channels
/// (chat.v2) instead joins each channel with one member per subscription, and is itself
/// a connection of the hub (``LoopHub/addConnection(_:)``).
public protocol HubMember: HubConnection {
    /// Hands the member one drain's events of its channel, in order. Called once per
    /// member per drain, however many events the batch holds.
    func deliver(_ batch: Batch)
    /// Who the member's socket is (its identity), for events meant for some people only
    /// (``ChatEvent/audience``); `nil`: no one's, it gets only events for everyone.
    var identity: String? { get }
    /// A moderation event of the member's channel for its person (or for everyone): a
    /// ban to carry out, a mute to tell of. Never part of a ``Batch``.
    func moderated(_ delivery: Delivery)
}

extension HubMember {
    public var identity: String? { nil }
    public func moderated(_ delivery: Delivery) {}
}

/// An event made ready for the wire once, shared by every member it goes to.
public struct Delivery: Sendable {
    /// The event.
    public let event: ChatEvent
    /// The event encoded in each wire format the server speaks, indexed by format;
    /// `nil` where a format has nothing to say about it.
    public let frames: [ByteBuffer?]

    public init(event: ChatEvent, frames: [ByteBuffer?]) {
        self.event = event
        self.frames = frames
    }
}

/// One channel's deliveries from one drain of a loop's inbox, shared by every member of
/// that channel on the loop.
///
/// ``frames(format:)`` joins the batch's frames of one wire format into a single buffer,
/// once per batch: each member then writes one buffer (one `writev` entry, one pending
/// write in NIO) however many messages arrived together.
public final class Batch {
    /// The channel.
    public let channel: ChannelName
    /// The deliveries, in order.
    public let deliveries: [Delivery]
    /// Joined frames per format; `.some(nil)` once known to be empty.
    private var joined: [ByteBuffer??]

    public init(channel: ChannelName, deliveries: [Delivery]) {
        self.channel = channel
        self.deliveries = deliveries
        self.joined = []
    }

    /// Every frame of `format` in the batch, back to back in one buffer; `nil` if the
    /// format has nothing to say about any of them.
    public func frames(format: Int) -> ByteBuffer? {
        if format < joined.count, let known = joined[format] { return known }
        let frames = deliveries.lazy.compactMap { $0.frames[format] }
        let result: ByteBuffer?
        if deliveries.count == 1 {
            result = frames.first
        } else {
            var total = 0
            for frame in frames { total += frame.readableBytes }
            if total == 0 {
                result = nil
            } else {
                var buffer = ByteBufferAllocator().buffer(capacity: total)
                for var frame in frames { buffer.writeBuffer(&frame) }
                result = buffer
            }
        }
        while joined.count <= format { joined.append(nil) }
        joined[format] = .some(result)
        return result
    }
}

/// Local fan-out: channel → the members on this instance.
///
/// One ``LoopHub`` per event loop holds that loop's members, so delivering never takes
/// a lock and never hops per member. A batch of messages is encoded once by the
/// hub's `encode` closure and handed to each loop in one hop; there a drain groups what
/// arrived by channel and gives each member of the channel one ``Batch``: one write and
/// one flush per member per drain. The cost of a message is proportional to the members
/// of its channel, not to every member on the instance.
public final class Hub: Sendable {
    private let loops: [LoopHub]
    private let loopIndex: [ObjectIdentifier: LoopHub]
    private let encode: @Sendable (ChatEvent) -> [ByteBuffer?]

    /// Creates a hub over every loop of `eventLoopGroup`.
    /// - Parameters:
    ///   - batchWindow: the least time between two drains of a loop's inbox. A message
    ///     that finds the loop idle for that long goes out at once; under load, what
    ///     arrives within the window goes out together, so each socket gets at most one
    ///     write per window however fast messages come. Zero drains as soon as the
    ///     loop is free.
    ///   - encode: makes the wire frames of an event, once per event.
    public init(
        eventLoopGroup: any EventLoopGroup,
        batchWindow: TimeAmount = .zero,
        metrics: ChatMetrics = .none,
        encode: @escaping @Sendable (ChatEvent) -> [ByteBuffer?]
    ) {
        let loops = eventLoopGroup.makeIterator().map { LoopHub(eventLoop: $0, batchWindow: batchWindow, metrics: metrics) }
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
    /// since the loop last drained it schedules a drain, no sooner than the batch
    /// window after the previous drain. Events that arrive meanwhile go out together,
    /// with one write and one flush per member — batching that grows with load instead
    /// of one hop and one write syscall per event.
    public func deliver(_ events: [ChatEvent]) {
        var deliveries: [Delivery] = []
        deliveries.reserveCapacity(events.count)
        for event in events {
            deliveries.append(Delivery(event: event, frames: encode(event)))
            // Someone's read state is theirs; the others in the room may see that they saw it.
            if case .read(let channel, let member, let offset) = event {
                let seen = ChatEvent.seen(channel: channel, member: member, offset: offset)
                let frames = encode(seen)
                if frames.contains(where: { $0 != nil }) { deliveries.append(Delivery(event: seen, frames: frames)) }
            }
        }
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
///
/// Sendable by proof, not by checking: `channels` is read and written only on
/// `eventLoop` (`add`, `remove` and `deliver` check it; `drain`, `goAway`, `heartbeat`
/// and `memberCounts` are only run there, by the hub and by `drain`'s own scheduling).
/// `inbox`, the one thing other threads touch, is behind a lock. A `NIOLoopBoundBox`
/// would check the same on every delivery, the hot path.
public final class LoopHub: @unchecked Sendable {
    /// The loop this part serves.
    public let eventLoop: any EventLoop
    private var channels: [ChannelName: Members] = [:]
    private var generations: UInt64 = 0
    /// Connections that are no channel's member themselves (chat.v2 sockets).
    private var connections: [ObjectIdentifier: any HubConnection] = [:]
    /// The least time between two drains.
    private let batchWindow: TimeAmount
    /// Deliveries waiting for the loop, whether a drain is already scheduled, and when
    /// the last one started.
    private let inbox = NIOLockedValueBox(Inbox())
    private let metrics: ChatMetrics

    private struct Inbox {
        var deliveries: [Delivery] = []
        var scheduled = false
        /// When the next drain may start: the batch window after the last one started,
        /// and at least as long after it ended as it took.
        var nextDrain = NIODeadline.uptimeNanoseconds(0)
    }

    /// One channel's members: an array to walk on every delivery, and each member's
    /// place in it so that leaving is O(1) (the last member moves into the gap).
    struct Members {
        var list: ContiguousArray<any HubMember> = []
        var places: [ObjectIdentifier: Int] = [:]
        /// Tells this entry from an earlier one of the same channel on this loop.
        let generation: UInt64
        /// The last message (or reset) drained to this channel's members on this loop.
        var drained: (epoch: String, offset: Int64)?

        init(generation: UInt64) {
            self.generation = generation
        }

        mutating func add(_ member: any HubMember) {
            let id = ObjectIdentifier(member)
            guard places[id] == nil else { return }
            places[id] = list.count
            list.append(member)
        }

        mutating func remove(_ member: any HubMember) {
            guard let place = places.removeValue(forKey: ObjectIdentifier(member)) else { return }
            let last = list.removeLast()
            if place < list.count {
                list[place] = last
                places[ObjectIdentifier(last)] = place
            }
        }
    }

    init(eventLoop: any EventLoop, batchWindow: TimeAmount = .zero, metrics: ChatMetrics = .none) {
        self.eventLoop = eventLoop
        self.batchWindow = batchWindow
        self.metrics = metrics
    }

    /// Queues deliveries for this loop from any thread.
    func post(_ deliveries: [Delivery]) {
        let due: NIODeadline? = inbox.withLockedValue { inbox in
            inbox.deliveries.append(contentsOf: deliveries)
            if inbox.scheduled { return nil }
            inbox.scheduled = true
            return inbox.nextDrain
        }
        guard let due else { return }
        if due <= .now() {
            eventLoop.execute { self.drain() }
        } else {
            eventLoop.scheduleTask(deadline: due) { self.drain() }
        }
    }

    /// Writes out the inbox, then sets when the next drain may start.
    ///
    /// Writing costs per socket (a syscall, and on loopback the receiver's TCP work),
    /// almost nothing per message. So the loop rests at least as long as the drain took
    /// before the next one: under a heavy fan-out batches grow until writing takes at
    /// most half the loop's time, instead of the loop writing one message at a time to
    /// every socket and falling behind. A light load never waits.
    private func drain() {
        let started = NIODeadline.now()
        let deliveries = inbox.withLockedValue { inbox in
            defer {
                inbox.deliveries.removeAll(keepingCapacity: true)
                inbox.scheduled = false
            }
            return inbox.deliveries
        }
        deliver(deliveries)
        let ended = NIODeadline.now()
        let next = max(started + batchWindow, ended + (ended - started))
        inbox.withLockedValue { $0.nextDrain = next }
    }

    /// Adds `member` to `channel`.
    public func add(_ member: any HubMember, to channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        if channels[channel] == nil {
            generations += 1
            channels[channel] = Members(generation: generations)
        }
        channels[channel]!.add(member)
    }

    /// Where this loop's delivery of `channel` stands, for a member that was just added;
    /// `nil` if the channel has no members here.
    ///
    /// A history read started while the same generation of members was here (and the
    /// broker's subscription held) carries every message this loop drained before it
    /// started; it also serves a member added later if it reaches as far as ``HubMark/drained``:
    /// what such a member missed live is exactly what was drained before it came.
    public func mark(of channel: ChannelName) -> HubMark? {
        eventLoop.preconditionInEventLoop()
        guard let members = channels[channel] else { return nil }
        return HubMark(generation: members.generation, drained: members.drained)
    }

    /// Removes `member` from `channel`.
    public func remove(_ member: any HubMember, from channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        channels[channel]?.remove(member)
        if channels[channel]?.list.isEmpty == true { channels[channel] = nil }
    }

    /// Adds a connection to the heartbeat and the goodbye at shutdown.
    public func addConnection(_ connection: any HubConnection) {
        eventLoop.preconditionInEventLoop()
        connections[ObjectIdentifier(connection)] = connection
    }

    public func removeConnection(_ connection: any HubConnection) {
        eventLoop.preconditionInEventLoop()
        connections[ObjectIdentifier(connection)] = nil
    }

    /// Gives each member of each channel in `deliveries` one batch: that channel's
    /// deliveries, in order.
    public func deliver(_ deliveries: [Delivery]) {
        eventLoop.preconditionInEventLoop()
        for (channel, batch) in Self.byChannel(deliveries) {
            // A snapshot: a member may leave (and so change the list) while delivering.
            guard let members = channels[channel]?.list else { continue }
            if let last = Self.lastPosition(in: batch) { channels[channel]!.drained = last }
            guard batch.contains(where: { $0.event.goesAlone }) else {
                deliver(batch, of: channel, to: members)
                continue
            }
            // Events for some people only (typing, read state, moderation) go on their own,
            // each to its audience, in their place: a message after someone's typing arrives
            // after it.
            var run: [Delivery] = []
            for delivery in batch {
                guard delivery.event.goesAlone else {
                    run.append(delivery)
                    continue
                }
                let audience = delivery.event.audience
                if !run.isEmpty { deliver(run, of: channel, to: members) }
                run = []
                if case .moderation = delivery.event {
                    for member in members where audience.includes(member.identity) {
                        member.moderated(delivery)
                    }
                    continue
                }
                let single = Batch(channel: channel, deliveries: [delivery])
                for member in members where audience.includes(member.identity) {
                    member.deliver(single)
                }
            }
            if !run.isEmpty { deliver(run, of: channel, to: members) }
        }
    }

    /// One batch of `deliveries` to every member.
    private func deliver(_ deliveries: [Delivery], of channel: ChannelName, to members: ContiguousArray<any HubMember>) {
        let batch = Batch(channel: channel, deliveries: deliveries)
        for member in members {
            member.deliver(batch)
        }
        metrics.delivered(members.count * batch.deliveries.count)
    }

    /// The position the last message or reset of `deliveries` leaves the channel at.
    static func lastPosition(in deliveries: [Delivery]) -> (epoch: String, offset: Int64)? {
        for delivery in deliveries.reversed() {
            switch delivery.event {
            case .message(let message): return (message.epoch, message.offset)
            case .reset(_, let epoch): return (epoch, 0)
            default: continue
            }
        }
        return nil
    }

    /// `deliveries` grouped by channel, each group in arrival order. Usually one group.
    static func byChannel(_ deliveries: [Delivery]) -> [(ChannelName, [Delivery])] {
        guard let first = deliveries.first?.event.channel else { return [] }
        if deliveries.allSatisfy({ $0.event.channel == first }) { return [(first, deliveries)] }
        var groups: [(ChannelName, [Delivery])] = []
        var place: [ChannelName: Int] = [:]
        for delivery in deliveries {
            let channel = delivery.event.channel
            if let index = place[channel] {
                groups[index].1.append(delivery)
            } else {
                place[channel] = groups.count
                groups.append((channel, [delivery]))
            }
        }
        return groups
    }

    func goAway() {
        let everyone: [any HubConnection] = channels.values.flatMap(\.list) + Array(connections.values)
        for member in everyone { member.goAway() }
    }

    func heartbeat(now: NIODeadline) {
        let everyone: [any HubConnection] = channels.values.flatMap(\.list) + Array(connections.values)
        for member in everyone { member.heartbeat(now: now) }
    }

    func memberCounts() -> [ChannelName: Int] {
        channels.mapValues(\.list.count)
    }
}
