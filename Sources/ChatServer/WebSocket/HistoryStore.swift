import Chat
import ChatArchive

/// The history a socket's resume reads: the broker's window, and below it, with an
/// archive, the archive's messages of the same epoch, so that a client that was away
/// longer than the window holds resumes where it was instead of being told `reset`.
///
/// The broker cuts its history back only below what the archive has (``ArchiveFeed``),
/// so the archive's part ends where the broker's begins. A position the archive does not
/// have (forgotten past the retention, or of an epoch it never got) is not covered, and
/// the resume is a `reset` as without an archive.
struct HistoryStore: Sendable {
    let broker: any Broker
    let archive: (any Archive)?

    init(broker: any Broker, archive: (any Archive)? = nil) {
        self.broker = broker
        self.archive = archive
    }

    /// Up to `limit` messages after `offset` (`nil`: where the channel stands), as
    /// ``Broker/history(of:after:limit:)`` answers, reaching into the archive below the
    /// broker's window.
    func history(of channel: ChannelName, after offset: Int64?, limit: Int) async throws -> History {
        let window = try await broker.history(of: channel, after: offset, limit: limit)
        guard let archive, let offset, offset >= 0, let epoch = window.epoch, offset < window.lastOffset else { return window }
        let first = window.firstOffset ?? window.lastOffset + 1
        guard offset + 1 < first else { return window }
        let older = try await ArchiveDeadline.within { try await archive.messages(in: channel, epoch: epoch, after: offset, before: first, limit: limit) }
        guard let oldest = older.first, oldest.offset == offset + 1 else { return window }
        var history = window
        history.firstOffset = oldest.offset
        history.messages = older + window.messages.prefix(max(0, limit - older.count))
        return history
    }
}
