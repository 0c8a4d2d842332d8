// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// What a message's text may hold: any Unicode text with tabs and line breaks, but no
/// other control characters.
///
/// Chat text is for people. A control character shows as nothing (or as a box) on every
/// page, and costs six bytes in JSON (`\u0001`): a history of such messages answered
/// six times its size. So C0 controls other than tab, line feed and carriage return
/// (browsers send a textarea's line breaks as CR LF), DEL and the C1 controls are refused.
public enum MessageText {
    /// Why `text` is refused, or `nil` when it is fine.
    public static func problem(with text: String) -> String? {
        for scalar in text.unicodeScalars where isRefused(scalar) {
            return "a message cannot hold control characters (found U+\(hex(scalar.value))); tabs and line breaks are fine"
        }
        return nil
    }

    /// Whether `text` is one emoji: a single character (a grapheme, such as 👍🏽 or 👨‍👩‍👧)
    /// of at most 64 bytes that shows as an emoji: one of its scalars is drawn as an
    /// emoji by default, or asks to be (U+FE0F, as in ❤️), or it is a keycap (1️⃣) or flag.
    public static func isOneEmoji(_ text: String) -> Bool {
        guard text.count == 1, text.utf8.count <= 64 else { return false }
        let scalars = text.unicodeScalars
        return scalars.contains { scalar in
            scalar.properties.isEmojiPresentation || scalar.value == 0xFE0F || scalar.value == 0x20E3 || (0x1F1E6...0x1F1FF).contains(scalar.value)
        }
    }

    private static func isRefused(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0D: false
        case 0x00...0x1F, 0x7F...0x9F: true
        default: false
        }
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
