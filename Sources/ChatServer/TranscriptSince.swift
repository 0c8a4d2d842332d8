// Imports only Foundation: scripts/fuzz.sh compiles this file into a libFuzzer target.
import Foundation

/// The `--since` of `chatroom export`.
enum TranscriptSince {
    /// `--since`: a date (`2026-12-01`, midnight UTC) or a time (`2026-12-01T10:00:00Z`,
    /// with an offset or `Z`), as ms since 1970.
    static func parse(_ text: String) -> Int64? {
        let full = ISO8601DateFormatter()
        full.formatOptions = [.withInternetDateTime]
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        guard let date = full.date(from: text) ?? fractional.date(from: text) ?? day.date(from: text) else { return nil }
        // Within what a message's time can be (±2^53 ms), not a trap for a year 99999.
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded(.down)
        guard milliseconds.isFinite, abs(milliseconds) <= 9_007_199_254_740_991 else { return nil }
        return Int64(milliseconds)
    }
}
