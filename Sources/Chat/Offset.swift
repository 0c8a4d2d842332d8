// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// Offsets as clients write them (`since`, a resume's offset): decimal digits only, from
/// 0 to 2^53 − 1.
///
/// Offsets travel as JSON numbers, and 2^53 − 1 is the largest integer a JavaScript
/// number holds exactly; no channel reaches it (a million messages a second for 285
/// years). The bound also leaves room for `offset + 1` and the like in every reader.
public enum Offset {
    /// The largest offset a client may name.
    public static let maximum: Int64 = 9_007_199_254_740_991

    /// The offset written in `text`, or `nil` unless it is decimal digits only (at most
    /// 32, leading zeros counted) whose value is at most ``maximum``.
    public static func parse(_ text: some StringProtocol) -> Int64? {
        guard (1...32).contains(text.utf8.count) else { return nil }
        var value: Int64 = 0
        var significant = 0
        for byte in text.utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            if significant == 0, byte == UInt8(ascii: "0") { continue }
            significant += 1
            // 16 digits hold the maximum; a 17th is more than it.
            guard significant <= 16 else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return value <= maximum ? value : nil
    }
}
