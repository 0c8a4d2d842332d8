/// What the archive does not have yet, as a broker hands it out: each channel's messages
/// and changes in offset order, a batch at a time, to one archiver at a time.
///
/// A batch taken and not acknowledged (its archiver died, or the archive was down) is
/// handed out again, to the same archiver or, once its hold on the channel lapses, to
/// another; so a batch may be kept twice, never lost, which the archive's keys make
/// harmless. Until the archive has a channel's messages the broker keeps them (up to
/// ``HistoryPolicy/archiveBacklog``), and then only its usual history.
public protocol ArchiveFeed: Sendable {
    /// The oldest messages not archived yet of a few channels, at most `limit` a
    /// channel, for `archiver` (an instance's own name); none when nothing waits.
    func take(_ limit: Int, for archiver: String) async throws -> [ArchiveBatch]

    /// The archive has `batch`: it is not handed out again, and the broker's history may
    /// drop what of it lies beyond its window.
    func archived(_ batch: ArchiveBatch, by archiver: String) async throws

    /// A channel has new messages (published here): looked at before the others.
    func due(_ channel: ChannelName)

    /// Waits until a channel has new messages, or `timeout` passes: what an archiver
    /// with nothing to do does.
    func waitForMessages(upTo timeout: Duration) async
}

/// A channel's messages the archive does not have yet.
public struct ArchiveBatch: Sendable {
    public var channel: ChannelName
    /// What to keep, in offset order (entries deleted since they were handed out are
    /// not among them: their text is gone for good).
    public var messages: [Message]
    /// What was handed out, as the broker names it, to acknowledge.
    public var entries: [String]
    /// Messages of the channel the broker let go before the archive took them (the
    /// archive was away longer than `--archive-backlog` covers): the archive will never
    /// have them. Told once, with the first batch after them.
    public var lost = 0

    public init(channel: ChannelName, messages: [Message], entries: [String]) {
        self.channel = channel
        self.messages = messages
        self.entries = entries
    }
}
