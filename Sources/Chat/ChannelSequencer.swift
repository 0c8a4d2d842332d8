import NIOCore

/// Keeps each channel's messages contiguous on their way from Redis pub/sub to the hub.
///
/// Pub/sub promises nothing: messages published while the pub/sub connection was down,
/// or dropped by Redis, simply never arrive. The sequencer knows the next offset it
/// expects per channel. A duplicate is dropped; a hole is filled from the history stream
/// before anything later is delivered (live messages wait meanwhile); a new epoch is
/// announced with `reset`; what the history no longer holds is announced with `gap`.
/// After a reconnect, every channel is caught up from the history the same way.
///
/// The rules are its ``StateMachine``; this class runs it on the subscriber's event loop
/// (its state is bound to that loop) and carries out what it returns: history reads,
/// their retries (timed by that loop), deliveries.
final class ChannelSequencer: Sendable {
    /// Reads the history after an offset; without one, where the channel stands.
    typealias Fetch = @Sendable (ChannelName, Int64?) async throws -> History

    private let eventLoop: any EventLoop
    private let machine: NIOLoopBoundBox<StateMachine>
    private let fetch: Fetch
    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let reused: @Sendable (ChannelName, Int64) -> Void
    private let behind: @Sendable (ChannelName, String, Int64) -> Void

    /// - Parameters:
    ///   - reused: told of a message that has the offset of the last one delivered but
    ///     is another message (Redis lost writes and handed it out again).
    ///   - behind: told when a history read shows Redis' last offset below what was
    ///     delivered here in the same epoch (Redis lost writes), with that offset.
    init(
        eventLoop: any EventLoop,
        fetch: @escaping Fetch,
        deliver: @escaping @Sendable ([ChatEvent]) -> Void,
        reused: @escaping @Sendable (ChannelName, Int64) -> Void = { _, _ in },
        behind: @escaping @Sendable (ChannelName, String, Int64) -> Void = { _, _, _ in }
    ) {
        self.eventLoop = eventLoop
        self.machine = NIOLoopBoundBox.makeBoxSendingValue(StateMachine(), eventLoop: eventLoop)
        self.fetch = fetch
        self.deliver = deliver
        self.reused = reused
        self.behind = behind
    }

    /// A listener joined `channel`.
    func join(_ channel: ChannelName) {
        eventLoop.execute {
            guard self.machine.value.join(channel) else { return }
            // The first listener here: where the channel stands is its floor until a
            // message of it comes, so a pub/sub reconnect before then still catches it up.
            let fetch = self.fetch
            self.eventLoop.makeFutureWithTask { try await fetch(channel, nil) }.whenSuccess { history in
                self.machine.value.stands(channel, epoch: history.epoch, lastOffset: history.lastOffset)
            }
        }
    }

    /// A listener left `channel`.
    func leave(_ channel: ChannelName) {
        eventLoop.execute { self.machine.value.leave(channel) }
    }

    /// Messages from pub/sub, in the order Redis sent them; called on the event loop.
    func receive(_ messages: [Message]) {
        eventLoop.preconditionInEventLoop()
        let actions = machine.value.receive(messages)
        run(actions)
    }

    /// The pub/sub subscriptions of `channels` are back (all channels when `nil`).
    func resubscribed(_ channels: Set<ChannelName>? = nil) {
        eventLoop.execute {
            let actions = self.machine.value.resubscribed(channels)
            self.run(actions)
        }
    }

    private func run(_ actions: [StateMachine.Action]) {
        for action in actions {
            switch action {
            case .deliver(let events):
                deliver(events)
            case .fetch(let channel, let offset, let attempt):
                let fetch = self.fetch
                eventLoop.makeFutureWithTask { try await fetch(channel, offset) }.whenComplete { result in
                    let next = self.machine.value.historyRead(channel, after: offset, attempt: attempt, result)
                    self.run(next)
                }
            case .retry(let channel, let offset, let attempt, let delay):
                eventLoop.scheduleTask(in: delay) {
                    self.run(self.machine.value.retryDue(channel, after: offset, attempt: attempt))
                }
            case .reused(let channel, let offset):
                reused(channel, offset)
            case .behind(let channel, let epoch, let delivered):
                behind(channel, epoch, delivered)
            }
        }
    }
}
