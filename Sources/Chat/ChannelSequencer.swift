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
/// Confined to the subscriber's event loop.
final class ChannelSequencer: @unchecked Sendable {
    private struct Position {
        var epoch: String
        var next: Int64
        /// When the message at `next - 1` was published, to tell a duplicate from a
        /// different message given the same offset.
        var lastTime: Int64 = 0
    }

    /// Reads the history after an offset.
    typealias Fetch = @Sendable (ChannelName, Int64) async throws -> History

    private let eventLoop: any EventLoop
    private let fetch: Fetch
    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let reused: @Sendable (ChannelName, Int64) -> Void
    private let behind: @Sendable (ChannelName, String, Int64) -> Void
    private var listeners: [ChannelName: Int] = [:]
    private var positions: [ChannelName: Position] = [:]
    private var waiting: [ChannelName: [Message]] = [:]

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
        self.fetch = fetch
        self.deliver = deliver
        self.reused = reused
        self.behind = behind
    }

    /// A listener joined `channel`.
    func join(_ channel: ChannelName) {
        eventLoop.execute { self.listeners[channel, default: 0] += 1 }
    }

    /// A listener left; when the last one goes, the channel's position is forgotten, so a
    /// later first listener is not sent what was published while nobody listened here.
    func leave(_ channel: ChannelName) {
        eventLoop.execute {
            let count = (self.listeners[channel] ?? 1) - 1
            self.listeners[channel] = count > 0 ? count : nil
            if count <= 0 {
                self.positions[channel] = nil
                self.waiting[channel] = nil
            }
        }
    }

    /// Messages from pub/sub, in the order Redis sent them.
    func receive(_ messages: [Message]) {
        eventLoop.preconditionInEventLoop()
        var out: [ChatEvent] = []
        for message in messages { handle(message, into: &out) }
        if !out.isEmpty { deliver(out) }
    }

    /// The pub/sub subscriptions of `channels` are back (all channels when `nil`): catch
    /// them up from their history.
    func resubscribed(_ channels: Set<ChannelName>? = nil) {
        eventLoop.execute {
            for (channel, position) in self.positions where self.waiting[channel] == nil && channels?.contains(channel) != false {
                self.waiting[channel] = []
                self.recover(channel, after: position.next - 1)
            }
        }
    }

    private func handle(_ message: Message, into out: inout [ChatEvent]) {
        let channel = message.channel
        guard listeners[channel] != nil else { return }
        if waiting[channel] != nil {
            waiting[channel]!.append(message)
            return
        }
        guard var position = positions[channel] else {
            positions[channel] = Position(epoch: message.epoch, next: message.offset + 1, lastTime: message.time)
            out.append(.message(message))
            return
        }
        if message.epoch != position.epoch {
            out.append(.reset(channel: channel, epoch: message.epoch))
            position = Position(epoch: message.epoch, next: 1)
            positions[channel] = position
        }
        if message.offset < position.next {
            // Already delivered — unless it is another message with the last offset.
            if message.offset == position.next - 1, position.lastTime != 0, message.time != position.lastTime {
                reused(channel, message.offset)
            }
            return
        }
        if message.offset == position.next {
            positions[channel]!.next += 1
            positions[channel]!.lastTime = message.time
            out.append(.message(message))
            return
        }
        waiting[channel] = [message]
        recover(channel, after: position.next - 1)
    }

    /// How often a failed history read is tried again before the hole is reported as a gap:
    /// after a Redis restart the pub/sub connection may be back before the command one.
    static let recoveryAttempts = 30
    static let recoveryRetryDelay = TimeAmount.milliseconds(100)

    /// Fetches the history after `offset`, delivers what is missing, then what waited.
    private func recover(_ channel: ChannelName, after offset: Int64, attempt: Int = 1) {
        let fetch = self.fetch
        let future = eventLoop.makeFutureWithTask { try await fetch(channel, offset) }
        future.whenComplete { result in
            if case .failure = result, attempt < Self.recoveryAttempts, self.waiting[channel] != nil {
                self.eventLoop.scheduleTask(in: Self.recoveryRetryDelay) {
                    guard self.waiting[channel] != nil else { return }
                    self.recover(channel, after: offset, attempt: attempt + 1)
                }
                return
            }
            guard self.waiting[channel] != nil, var position = self.positions[channel] else { return }
            if case .success(let history) = result, let epoch = history.epoch, epoch != position.epoch, offset > 0 {
                // A new epoch (Redis lost the channel, e.g. restarted empty): its offsets
                // start again at 1, so "after the old offset" skipped its first messages.
                self.recover(channel, after: 0, attempt: attempt)
                return
            }
            let buffered = self.waiting.removeValue(forKey: channel) ?? []
            var out: [ChatEvent] = []
            if case .success(let history) = result, let epoch = history.epoch {
                if epoch == position.epoch, history.lastOffset < position.next - 1 {
                    // Redis is behind what was delivered here: it lost writes. Say so
                    // before anyone is handed those offsets again.
                    self.behind(channel, epoch, position.next - 1)
                }
                if epoch != position.epoch {
                    out.append(.reset(channel: channel, epoch: epoch))
                    position = Position(epoch: epoch, next: 1)
                }
                for message in history.messages where message.offset >= position.next {
                    if message.offset > position.next {
                        out.append(.gap(channel: channel, from: position.next, to: message.offset - 1))
                    }
                    out.append(.message(message))
                    position.next = message.offset + 1
                    position.lastTime = message.time
                }
            }
            // Whatever waited was stored before this read, so a hole still open here is
            // one the history no longer holds (or could not be read): say so, never wait on it.
            if let first = buffered.first(where: { $0.epoch == position.epoch }), first.offset > position.next {
                out.append(.gap(channel: channel, from: position.next, to: first.offset - 1))
                position.next = first.offset
            }
            self.positions[channel] = position
            for message in buffered { self.handle(message, into: &out) }
            if !out.isEmpty { self.deliver(out) }
        }
    }
}
