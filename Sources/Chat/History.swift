/// What a channel's history holds after some offset, read in one step.
public struct History: Sendable, Equatable {
    /// The channel.
    public var channel: ChannelName
    /// The channel's epoch; `nil` if nothing was ever published (or it was all lost).
    public var epoch: String?
    /// The last offset handed out in this epoch; 0 if none.
    public var lastOffset: Int64
    /// The oldest offset still kept; `nil` if the history is empty.
    public var firstOffset: Int64?
    /// The messages asked for, oldest first.
    public var messages: [Message]

    /// Creates a history.
    public init(channel: ChannelName, epoch: String?, lastOffset: Int64, firstOffset: Int64?, messages: [Message]) {
        self.channel = channel
        self.epoch = epoch
        self.lastOffset = lastOffset
        self.firstOffset = firstOffset
        self.messages = messages
    }

    /// Whether a client that last saw `offset` in `epoch` can have everything after it from here.
    ///
    /// True when the epoch is the same and every offset after `offset` is still kept (or
    /// nothing was published since). A client claiming an offset beyond the last one is
    /// from another history: not covered.
    public func covers(after offset: Int64, epoch clientEpoch: String) -> Bool {
        guard let epoch, epoch == clientEpoch, offset >= 0, offset <= lastOffset else { return false }
        if offset == lastOffset { return true }
        guard let firstOffset else { return false }
        return firstOffset <= offset + 1
    }
}

/// How much history each channel keeps.
public struct HistoryPolicy: Sendable, Equatable {
    /// Messages kept per channel (the newest ones); Redis may keep a few more (`MAXLEN ~`).
    public var size: Int
    /// Drop a channel (its history, its offsets, so a new epoch begins) after this long
    /// without a message; `nil` keeps it forever.
    public var timeToLive: Duration?
    /// How long a publish's idempotency key is remembered: a retry within it publishes nothing.
    public var dedupeWindow: Duration
    /// How long after a message its author may edit it (`--edit-window`).
    public var editWindow: Duration

    /// 1000 messages per channel.
    public static let defaultSize = 1000
    /// A channel idle for 30 days is dropped, so that what clients create does not stay
    /// in Redis (or in memory) forever.
    public static let defaultTimeToLive: Duration = .seconds(30 * 24 * 3600)
    /// Ten minutes, the `--dedupe-window` default.
    public static let defaultDedupeWindow: Duration = .seconds(600)
    /// An hour, the `--edit-window` default.
    public static let defaultEditWindow: Duration = .seconds(3600)

    /// With an archive: how many messages a channel's history may hold while the archive
    /// has not taken them (it is cut back to ``size`` as they are archived); past it the
    /// oldest go unarchived. `nil`: no archive, the history holds ``size``.
    public var archiveBacklog: Int?

    /// How long an archiver holds a channel after each batch it takes: another takes the
    /// channel over (and what the first left unacknowledged) only after it.
    public var archiveHold: Duration = .seconds(15)

    /// 100,000 messages per channel waiting for the archive.
    public static let defaultArchiveBacklog = 100_000

    /// How many messages the history stream may hold: ``size``, or the archive's backlog.
    public var streamLength: Int { max(size, archiveBacklog ?? 0) }

    /// Creates a policy; by default 1000 messages, dropped after 30 idle days, keys
    /// remembered for ten minutes, messages editable for an hour, no archive.
    public init(
        size: Int = defaultSize, timeToLive: Duration? = defaultTimeToLive, dedupeWindow: Duration = defaultDedupeWindow,
        editWindow: Duration = defaultEditWindow, archiveBacklog: Int? = nil
    ) {
        self.size = size
        self.timeToLive = timeToLive
        self.dedupeWindow = dedupeWindow
        self.editWindow = editWindow
        self.archiveBacklog = archiveBacklog
    }
}
