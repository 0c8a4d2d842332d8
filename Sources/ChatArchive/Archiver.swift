import Chat
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Moves what the broker holds into the archive, batch by batch, on every instance: the
/// broker hands each channel to one archiver at a time (``ArchiveFeed``), and a batch is
/// acknowledged only once the archive has committed it. It never holds up a publish: the
/// broker keeps what the archive has not taken (up to its backlog) meanwhile.
///
/// An archive that cannot be reached is tried again with a growing pause (up to
/// ``longestPause``), the same batch each time; after ``lateAfter`` of that,
/// ``notReadyReason()`` says so (`/readyz`), for the broker's backlog is filling.
public final class Archiver: Service, Sendable {
    let feed: any ArchiveFeed
    public let archive: any Archive
    /// This instance's name as an archiver (it holds channels under it).
    let name: String
    let batchSize: Int
    /// Messages older than this are forgotten (checked every hour); `nil`: kept forever.
    let retention: Duration?
    private let logger: Logger
    private let metrics: ChatMetrics
    private let state = NIOLockedValueBox(Progress())

    /// How long an idle archiver waits before it looks again (a publish here wakes it).
    static let idlePause: Duration = .milliseconds(200)
    static let longestPause: Duration = .seconds(5)
    static let lateAfter: Duration = .seconds(30)

    struct Progress {
        var prepared = false
        var kept = 0
        /// Since when the archive (or the feed) has failed, and why; `nil` while it works.
        var failingSince: ContinuousClock.Instant?
        var failure: String?
        var lastForget: ContinuousClock.Instant?
    }

    public init(
        feed: any ArchiveFeed, archive: any Archive, name: String, batchSize: Int = 500, retention: Duration? = nil, metrics: ChatMetrics = .none,
        logger: Logger
    ) {
        self.metrics = metrics
        self.feed = feed
        self.archive = archive
        self.name = name
        self.batchSize = batchSize
        self.retention = retention
        self.logger = logger
    }

    /// Messages (and changes) kept since the start.
    public var kept: Int { state.withLockedValue { $0.kept } }

    /// Why the server should not count as ready: the archive has failed for a while.
    public func notReadyReason() -> String? {
        state.withLockedValue { state in
            guard let since = state.failingSince, ContinuousClock.now - since > Self.lateAfter else { return nil }
            return "the archive has taken no messages for \(Int((ContinuousClock.now - since) / .seconds(1))) s (\(state.failure ?? "failing")); the broker holds them meanwhile"
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.loop()
        }
        await archive.close()
    }

    private func loop() async {
        var pause = Self.idlePause
        var pending: [ArchiveBatch] = []
        while !Task.isCancelled {
            do {
                if !state.withLockedValue({ $0.prepared }) {
                    try await archive.prepare()
                    state.withLockedValue { $0.prepared = true }
                    logger.info("The archive is ready", metadata: ["archiver": "\(name)"])
                }
                try await forgetIfDue()
                // Kept again after a failure: the same batches, until the archive has them.
                let batches = pending.isEmpty ? try await taken() : pending
                guard !batches.isEmpty else {
                    recovered()
                    // Until a message is published here, or a while (another instance's).
                    await feed.waitForMessages(upTo: Self.idlePause)
                    try Task.checkCancellation()
                    continue
                }
                pending = batches
                // One transaction for all of them: each channel's in offset order.
                try await archive.keep(batches.flatMap(\.messages))
                pending = []
                // Each channel's acknowledgement on its own (side by side: one round trip).
                let feed = self.feed
                let name = self.name
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for batch in batches { group.addTask { try await feed.archived(batch, by: name) } }
                    try await group.waitForAll()
                }
                let kept = batches.reduce(0) { $0 + $1.messages.count }
                state.withLockedValue { $0.kept += kept }
                metrics.archived(kept)
                recovered()
                pause = Self.idlePause
            } catch is CancellationError {
                return
            } catch {
                failed(error)
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, Self.longestPause)
            }
        }
    }

    /// The next batches; what the broker let go before the archive took it is counted
    /// and told (once: a batch kept again after a failure is not taken again).
    private func taken() async throws -> [ArchiveBatch] {
        let batches = try await feed.take(batchSize, for: name)
        for batch in batches where batch.lost > 0 {
            metrics.lostToArchive(batch.lost)
            logger.error(
                "Messages were let go before the archive took them: it was away longer than --archive-backlog covers; the archive will not have them",
                metadata: ["channel": "\(batch.channel)", "lost": "\(batch.lost)", "archiver": "\(name)"]
            )
        }
        return batches
    }

    private func recovered() {
        let was = state.withLockedValue { state -> String? in
            defer {
                state.failingSince = nil
                state.failure = nil
            }
            return state.failingSince == nil ? nil : state.failure
        }
        if let was { logger.notice("The archive takes messages again", metadata: ["was": "\(was)"]) }
    }

    private func failed(_ error: any Error) {
        let first = state.withLockedValue { state -> Bool in
            defer { state.failure = "\(error)" }
            if state.failingSince == nil {
                state.failingSince = .now
                return true
            }
            return false
        }
        // Once when it starts failing; the rest at debug level (the readiness says it goes on).
        if first {
            logger.warning("The archive cannot take messages; the broker holds them meanwhile", metadata: ["error": "\(error)"])
        } else {
            logger.debug("The archive still cannot take messages", metadata: ["error": "\(error)"])
        }
    }

    /// Every hour, what is older than the retention goes.
    private func forgetIfDue() async throws {
        guard let retention else { return }
        let due = state.withLockedValue { state -> Bool in
            if let last = state.lastForget, ContinuousClock.now - last < .seconds(3600) { return false }
            state.lastForget = .now
            return true
        }
        guard due else { return }
        let cutoff = RoomModeration.now - Int64(retention / .milliseconds(1))
        let forgotten = try await archive.forget(before: cutoff)
        if forgotten > 0 { logger.info("Forgot archived messages past the retention", metadata: ["messages": "\(forgotten)"]) }
    }
}
