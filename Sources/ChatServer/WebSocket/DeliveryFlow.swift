import Chat
import NIOCore

/// How the hub's deliveries reach one chat socket: written as they come, held while a
/// resume reads the history, or dropped while a slow reader catches up.
///
/// A value without I/O: ``ChatSocket`` hands it each event and carries out the action it
/// returns (write, hold, drop, read a history page, tell a gap). Whether the kernel takes
/// more is an input: the socket finds out before it offers an event (finding out may
/// flush, and a flush may tell the socket it drained, so it cannot happen while the flow
/// is being changed).
struct DeliveryFlow {
    /// Where a chat.v1 client resumes: the last offset it has, in its epoch.
    struct Resume: Sendable, Equatable {
        var after: Int64
        /// Empty (with `after` 0): the client had nothing yet, in any epoch (an event
        /// stream that joined a channel with no history); it gets all there is.
        var epoch: String

        /// Whether `history` holds every message after the resume.
        func isCovered(by history: History) -> Bool {
            guard epoch.isEmpty, after == 0 else { return history.covers(after: after, epoch: epoch) }
            guard let first = history.firstOffset else { return history.lastOffset == 0 }
            return first <= 1
        }
    }

    /// What a reader that fell behind missed, told once it drains: a `reset` when the
    /// epoch changed meanwhile, then one `gap` for the range of the dropped messages.
    struct Missed: Equatable {
        var from: Int64?
        var to: Int64?
        var reset: String?

        mutating func record(_ event: ChatEvent) {
            switch event {
            case .message(let message):
                from = from ?? message.offset
                to = max(to ?? message.offset, message.offset)
            case .gap(_, let first, let last):
                from = min(from ?? first, first)
                to = max(to ?? last, last)
            case .reset(_, let epoch):
                // Offsets dropped so far belong to the old epoch: the reset covers them.
                reset = epoch
                from = nil
                to = nil
            case .presence, .members, .join, .leave:
                break  // who is here is told again; a reader that catches up can ask ("who")
            case .typing, .read, .seen, .moderation:
                break  // of the moment; read state is told again with the next subscription
            }
        }
    }

    /// What happens to a reader the kernel takes no more from.
    enum SlowReaders {
        /// Close it: the original protocol has no way to tell a client what it missed.
        case close
        /// Drop its messages and tell it the range once it drains (chat.v1).
        case drop
    }

    /// A history read the socket should start: the messages after `after`, or, when it
    /// is `nil`, only where the channel stands (its epoch and last offset).
    struct HistoryRead: Equatable {
        var after: Int64?
        var limit: Int
    }

    /// What to do with a batch from the hub.
    enum BatchAction: Equatable {
        /// Write the batch's joined frames for this socket's format (or, if the socket
        /// cannot take them, call ``fellBehind(_:)``).
        case writeJoined
        /// Offer each delivery with ``offerLive(_:writable:)``: a replay just ended.
        case offerEach
        /// Held until the replay's history read is written.
        case held
        /// Dropped: the reader is behind.
        case dropped
    }

    /// What to do with one event offered to the socket.
    enum Offer: Equatable {
        /// Write its frame.
        case write
        /// Nothing: dropped (counted in ``Missed``) or already carried by the replay.
        case skip
        /// The socket just fell behind; ``slowReaders`` says what that means.
        case fellBehind
    }

    /// What to do with a history page that arrived.
    enum ReplayStep {
        /// Not replaying (the socket closed meanwhile, or a stray answer).
        case ignore
        /// The history cannot be read: close the socket and let the client resume later.
        case fail(any Error)
        /// The client's position is not in the history: write a `reset` to this epoch,
        /// then offer the held deliveries.
        case reset(epoch: String?, then: [Delivery])
        /// Offer these messages with ``offer(_:writable:)``, then call ``pageWritten()``.
        case write([Message])
        /// The replay is over: offer the held deliveries.
        case release([Delivery])
    }

    /// What to do after a page was written.
    enum AfterPage {
        case read(HistoryRead)
        case release([Delivery])
    }

    /// Most messages read from the history at once while resuming.
    static let replayPage = 100
    /// Messages in a resume's first read; later reads hold about ``replayPageBytes``.
    static let firstReplayPage = 20
    /// About how many bytes of messages a replay reads at once.
    static let replayPageBytes = 1 << 20
    /// Pages one resume reads at most.
    static let maximumPages = 10_000

    /// A resume in progress.
    private struct Replay {
        /// `nil`: not a resume; the read only finds where the channel stands.
        let resume: Resume?
        /// The history's epoch, known once the first page is in.
        var epoch: String?
        var pages = 1
        var requested = DeliveryFlow.firstReplayPage
        /// Live deliveries that came while the history was read.
        var waiting: [Delivery] = []
        /// The page being written, if one is.
        var page: Page?
    }

    private struct Page {
        var epoch: String
        var lastOffset: Int64
        var lastWritten: Int64
        var full: Bool
        var averageBytes: Int
    }

    /// What a flow holds while it is not live, kept out of line: a flow is live nearly all
    /// the time, and every socket (a chat.v2 socket: every subscription) holds one for as
    /// long as it is open, so a live flow is one reference.
    private final class Unsettled {
        var missed: Missed?
        var replay: Replay?
        var replayedThrough: (epoch: String, offset: Int64)?

        init() {}

        init(copying other: Unsettled) {
            missed = other.missed
            replay = other.replay
            replayedThrough = other.replayedThrough
        }

        var isEmpty: Bool { missed == nil && replay == nil && replayedThrough == nil }
    }
    private var unsettled: Unsettled?
    // After the reference, so that the flow packs into 9 bytes.
    let slowReaders: SlowReaders

    /// Changes the out-of-line state in place (a copy of the flow gets its own first), and
    /// lets it go once nothing is left in it.
    private mutating func settle(_ change: (Unsettled) -> Void) {
        if unsettled == nil {
            unsettled = Unsettled()
        } else if !isKnownUniquelyReferenced(&unsettled!) {
            unsettled = Unsettled(copying: unsettled!)
        }
        change(unsettled!)
        if unsettled!.isEmpty { unsettled = nil }
    }

    /// Set while the reader is behind.
    private(set) var missed: Missed? {
        get { unsettled?.missed }
        set {
            guard newValue != nil || unsettled?.missed != nil else { return }
            settle { $0.missed = newValue }
        }
    }
    /// A resume in progress.
    private var replay: Replay? {
        get { unsettled?.replay }
        set {
            guard newValue != nil || unsettled?.replay != nil else { return }
            settle { $0.replay = newValue }
        }
    }
    /// Where the resume's history read ended. Until a message past it arrives, live
    /// messages up to it are skipped: the hub may hand over, at its next drain, a message
    /// that the history read already carried (the batch window).
    private var replayedThrough: (epoch: String, offset: Int64)? {
        get { unsettled?.replayedThrough }
        set {
            guard newValue != nil || unsettled?.replayedThrough != nil else { return }
            settle { $0.replayedThrough = newValue }
        }
    }

    /// Nothing to hold, drop or skip: a batch goes out as it is.
    var isLive: Bool { unsettled == nil }

    init(slowReaders: SlowReaders) {
        self.slowReaders = slowReaders
    }

    /// Whether a resume is reading or writing the history.
    var isReplaying: Bool { unsettled?.replay != nil }

    // MARK: - Events

    /// The socket opened; with `resume`, the first history page to read.
    mutating func opened(resume: Resume?) -> HistoryRead? {
        guard let resume else { return nil }
        replay = Replay(resume: resume)
        return HistoryRead(after: resume.after, limit: Self.firstReplayPage)
    }

    /// A chat.v2 subscription opened without a resume: the first read finds where the
    /// channel stands; until it answers, deliveries wait, and afterwards those it already
    /// counted are skipped, so the client hears of every message after that position once.
    mutating func openedAtPosition() -> HistoryRead {
        replay = Replay(resume: nil)
        return HistoryRead(after: nil, limit: 1)
    }

    /// The hub handed over a batch. (While ``isLive``, it is `writeJoined`.)
    mutating func batchArrived(_ deliveries: [Delivery]) -> BatchAction {
        if isLive { return .writeJoined }
        if isReplaying {
            // In place, so that the held deliveries are not copied at every batch.
            settle { $0.replay!.waiting.append(contentsOf: deliveries) }
            return .held
        }
        if missed != nil {
            settle { unsettled in for delivery in deliveries { unsettled.missed!.record(delivery.event) } }
            return .dropped
        }
        return replayedThrough == nil ? .writeJoined : .offerEach
    }

    /// The socket cannot take `events`: drop them, or, for the original protocol, leave
    /// closing to the socket.
    mutating func fellBehind(_ events: some Sequence<ChatEvent>) {
        guard slowReaders == .drop else { return }
        var missed = self.missed ?? Missed()
        for event in events { missed.record(event) }
        self.missed = missed
    }

    /// Whether the reader is behind: events offered now are dropped, whatever the kernel says.
    var isDropping: Bool { missed != nil }

    /// One event to write in order, as replays and deliveries after one are.
    mutating func offer(_ event: ChatEvent, writable: Bool) -> Offer {
        if missed != nil {
            settle { $0.missed!.record(event) }
            return .skip
        }
        guard writable else {
            fellBehind(CollectionOfOne(event))
            return .fellBehind
        }
        return .write
    }

    /// A live delivery after a replay: messages the replay carried are skipped; the first
    /// message past it ends the skipping.
    mutating func offerLive(_ delivery: Delivery, writable: Bool) -> Offer {
        if let through = replayedThrough, case .message(let message) = delivery.event {
            if message.epoch == through.epoch, message.offset <= through.offset { return .skip }
            replayedThrough = nil
        }
        return offer(delivery.event, writable: writable)
    }

    /// The socket drained: what it missed, to be told now.
    mutating func drained() -> Missed? {
        defer { missed = nil }
        return missed
    }

    /// A history page of a resume arrived.
    mutating func historyRead(_ result: Result<History, any Error>) -> ReplayStep {
        guard var replay = self.replay, replay.page == nil else { return .ignore }
        let history: History
        switch result {
        case .success(let read):
            history = read
        case .failure(let error):
            self.replay = nil
            return .fail(error)
        }
        guard let resume = replay.resume else {
            self.replay = nil
            if let epoch = history.epoch { replayedThrough = (epoch, history.lastOffset) }
            return .release(replay.waiting)
        }
        if replay.epoch == nil, !resume.isCovered(by: history) {
            self.replay = nil
            return .reset(epoch: history.epoch, then: replay.waiting)
        }
        // A new epoch between two pages ends the replay: its messages come live.
        guard let epoch = history.epoch, replay.epoch == nil || replay.epoch == epoch else {
            self.replay = nil
            return .release(replay.waiting)
        }
        let bytes = history.messages.reduce(0) { $0 + $1.data.readableBytes }
        replay.epoch = epoch
        replay.page = Page(
            epoch: epoch,
            lastOffset: history.lastOffset,
            lastWritten: history.messages.last?.offset ?? replayedThrough?.offset ?? resume.after,
            full: history.messages.count == replay.requested,
            averageBytes: max(1, bytes / max(1, history.messages.count))
        )
        self.replay = replay
        return .write(history.messages)
    }

    /// The page from ``historyRead(_:)`` was offered, message by message.
    mutating func pageWritten() -> AfterPage {
        guard var replay, let page = replay.page else { return .release([]) }
        replayedThrough = (page.epoch, page.lastWritten)
        if missed != nil {
            // Too slow for its replay: the pages not read yet are part of the gap.
            missed!.to = max(missed!.to ?? page.lastOffset, page.lastOffset)
        } else if page.full, page.lastWritten < page.lastOffset, replay.pages < Self.maximumPages {
            replay.page = nil
            replay.pages += 1
            replay.requested = max(1, min(Self.replayPage, Self.replayPageBytes / page.averageBytes))
            self.replay = replay
            return .read(HistoryRead(after: page.lastWritten, limit: replay.requested))
        }
        self.replay = nil
        return .release(replay.waiting)
    }
}
