import Chat
import Foundation
import NIOConcurrencyHelpers

/// Messages reaching this instance, per second, over the last minute.
final class MessageRate: Sendable {
    private struct Buckets {
        var counts = [Int](repeating: 0, count: 60)
        var seconds = [Int64](repeating: -1, count: 60)
    }

    private let buckets = NIOLockedValueBox(Buckets())

    /// Counts the messages among `events`, at the current second.
    func record(_ events: [ChatEvent]) {
        let count = events.reduce(0) { $0 + ($1.message == nil ? 0 : 1) }
        guard count > 0 else { return }
        let second = Self.now()
        buckets.withLockedValue { buckets in
            let index = Int(second % 60)
            if buckets.seconds[index] != second {
                buckets.seconds[index] = second
                buckets.counts[index] = 0
            }
            buckets.counts[index] += count
        }
    }

    /// The 60 whole seconds before the current one, oldest first.
    func lastMinute() -> [Int] {
        let now = Self.now()
        return buckets.withLockedValue { buckets in
            ((now - 60)..<now).map { second in
                let index = Int(second % 60)
                return buckets.seconds[index] == second ? buckets.counts[index] : 0
            }
        }
    }

    private static func now() -> Int64 {
        Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000_000)
    }
}
