import Chat
import NIOConcurrencyHelpers
import NIOCore

/// The first history read of every socket and subscription that starts, shared by those
/// that ask the same of the same channel on one event loop.
///
/// A thousand sockets that reconnect at once and resume a channel from the same offset
/// would read the same page a thousand times. Here they read it once per loop, as long
/// as one read serves them all exactly: a read may serve a socket added to the hub
/// after it started only if it reaches as far as the last message that loop drained to
/// the channel before the socket came (``LoopHub/mark(of:)``), since those are all the
/// socket missed live; anything later reaches it live, and its flow skips what the read
/// already carried. A read that does not reach is read again for those it cannot serve.
/// Answers are kept for ``keep`` to serve sockets that come soon after; the marks keep
/// that exact too.
final class HistoryReads: Sendable {
    /// How long an answer serves later sockets.
    static let keep = TimeAmount.milliseconds(500)

    private let store: HistoryStore
    private let loops: [ObjectIdentifier: NIOLoopBoundBox<LoopReads>]
    private let metrics: ChatMetrics

    init(store: HistoryStore, eventLoopGroup: any EventLoopGroup, metrics: ChatMetrics = .none) {
        self.store = store
        self.metrics = metrics
        var loops: [ObjectIdentifier: NIOLoopBoundBox<LoopReads>] = [:]
        for loop in eventLoopGroup.makeIterator() {
            loops[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeBoxSendingValue(LoopReads(), eventLoop: loop)
        }
        self.loops = loops
    }

    /// One read: what it asks, and of which generation of the channel's members.
    struct Key: Hashable {
        var channel: ChannelName
        var after: Int64?
        var limit: Int
        var generation: UInt64
    }

    private struct Waiter {
        var mark: HubMark
        /// Came before the read started: the read serves it whatever it finds.
        var beforeStart: Bool
        var answer: (Result<History, any Error>) -> Void
    }

    private enum Entry {
        case reading(waiting: [Waiter])
        case answered(History, at: NIODeadline)
    }

    private struct LoopReads {
        var entries: [Key: Entry] = [:]
    }

    /// Reads `read` of `channel` for a member just added to `hub` (whose loop this runs
    /// on); `answer` is called there, never before this returns.
    func read(
        _ read: DeliveryFlow.HistoryRead, of channel: ChannelName, for hub: LoopHub,
        answer: @escaping (Result<History, any Error>) -> Void
    ) {
        let eventLoop = hub.eventLoop
        guard let box = loops[ObjectIdentifier(eventLoop)], let mark = hub.mark(of: channel) else {
            // Not in the hub (cannot happen for a socket that just joined): read alone.
            readPage(read, of: channel, on: eventLoop, answer: answer)
            return
        }
        let key = Key(channel: channel, after: read.after, limit: read.limit, generation: mark.generation)
        switch box.value.entries[key] {
        case .answered(let history, let at) where NIODeadline.now() - at < Self.keep && Self.reaches(history, mark):
            metrics.historyReadShared()
            eventLoop.assumeIsolated().execute { answer(.success(history)) }
        case .reading(var waiting):
            metrics.historyReadShared()
            waiting.append(Waiter(mark: mark, beforeStart: false, answer: answer))
            box.value.entries[key] = .reading(waiting: waiting)
        case .answered, nil:
            start(key, waiters: [Waiter(mark: mark, beforeStart: true, answer: answer)], box: box, eventLoop: eventLoop)
        }
    }

    private func start(_ key: Key, waiters: [Waiter], box: NIOLoopBoundBox<LoopReads>, eventLoop: any EventLoop) {
        box.value.entries[key] = .reading(waiting: waiters)
        let store = self.store
        eventLoop.makeFutureWithTask {
            try await store.history(of: key.channel, after: key.after, limit: key.limit)
        }.assumeIsolated().whenComplete { result in
            guard case .reading(let waiting) = box.value.entries[key] else { return }
            box.value.entries[key] = nil
            var again: [Waiter] = []
            for waiter in waiting {
                if case .success(let history) = result, !waiter.beforeStart, !Self.reaches(history, waiter.mark) {
                    again.append(Waiter(mark: waiter.mark, beforeStart: true, answer: waiter.answer))
                } else {
                    waiter.answer(result)
                }
            }
            if !again.isEmpty {
                self.start(key, waiters: again, box: box, eventLoop: eventLoop)
            } else if case .success(let history) = result {
                box.value.entries[key] = .answered(history, at: .now())
                eventLoop.assumeIsolated().scheduleTask(in: Self.keep) {
                    if case .answered(_, let at) = box.value.entries[key], NIODeadline.now() - at >= Self.keep { box.value.entries[key] = nil }
                }
            }
        }
    }

    /// Reads one page alone (a replay's pages after the first), answered on `eventLoop`.
    func readPage(_ read: DeliveryFlow.HistoryRead, of channel: ChannelName, on eventLoop: any EventLoop, answer: @escaping (Result<History, any Error>) -> Void) {
        let store = self.store
        eventLoop.makeFutureWithTask {
            try await store.history(of: channel, after: read.after, limit: read.limit)
        }.assumeIsolated().whenComplete(answer)
    }

    /// Whether `history` carries everything drained before `mark` was taken.
    static func reaches(_ history: History, _ mark: HubMark) -> Bool {
        guard let drained = mark.drained else { return true }
        return history.epoch == drained.epoch && history.lastOffset >= drained.offset
    }
}
