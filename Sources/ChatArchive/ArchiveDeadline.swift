import NIOConcurrencyHelpers

/// How long a reader waits for the archive: a database that is away (a pool that cannot
/// connect, a SQLite file busy with a long search) gets a quick, clear refusal, not a
/// request that hangs for a minute.
public enum ArchiveDeadline {
    /// What a read of the archive may take.
    public static let reads: Duration = .seconds(5)

    /// `body`'s answer, or ``ArchiveError`` once `timeout` passes (`body` is then
    /// cancelled and its answer, whenever it comes, dropped).
    public static func within<T: Sendable>(_ timeout: Duration = reads, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let pending = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let take: @Sendable () -> CheckedContinuation<T, any Error>? = { pending.withLockedValue { waiting -> CheckedContinuation<T, any Error>? in
            defer { waiting = nil }
            return waiting
        } }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            pending.withLockedValue { $0 = continuation }
            let work = Task {
                do {
                    let answer = try await body()
                    take()?.resume(returning: answer)
                } catch {
                    take()?.resume(throwing: error)
                }
            }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled, let waiting = take() else { return }
                work.cancel()
                waiting.resume(throwing: ArchiveError("the archive's database did not answer within \(Int(timeout / .seconds(1))) s"))
            }
            // The timer goes as soon as the work is done.
            Task {
                _ = await work.result
                timer.cancel()
            }
        }
    }
}
