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

    /// Whether `text` is one emoji, as a reaction must be: one character (grapheme) of
    /// at most 64 bytes that is an emoji sequence of Unicode's kinds —
    ///
    /// - a flag: two regional indicators (🇯🇵);
    /// - a keycap: `0`–`9`, `#` or `*`, an optional U+FE0F, then U+20E3 (1️⃣);
    /// - a subdivision flag: 🏴, the tags of England, Scotland or Wales, the cancel tag (🏴󠁧󠁢󠁳󠁣󠁴󠁿);
    /// - emoji joined by U+200D (👩‍💻), each one an emoji that shows as one by default or
    ///   asks to (a single U+FE0F, as in ❤️), with at most one skin tone (👍🏽).
    ///
    /// Nothing else: no letters, spaces, marks or stray selectors, so a reaction cannot be
    /// blank or look like another one.
    public static func isOneEmoji(_ text: String) -> Bool {
        guard text.count == 1, text.utf8.count <= 64 else { return false }
        let scalars = Array(text.unicodeScalars)
        func isRegional(_ scalar: Unicode.Scalar) -> Bool { (0x1F1E6...0x1F1FF).contains(scalar.value) }
        func isSkinTone(_ scalar: Unicode.Scalar) -> Bool { (0x1F3FB...0x1F3FF).contains(scalar.value) }
        // A flag.
        if scalars.count == 2, isRegional(scalars[0]), isRegional(scalars[1]) { return true }
        // A keycap.
        if let last = scalars.last, last.value == 0x20E3 {
            let base = scalars[0]
            guard "0123456789#*".unicodeScalars.contains(base) else { return false }
            return scalars.count == 2 || (scalars.count == 3 && scalars[1].value == 0xFE0F)
        }
        // A subdivision flag: the three Unicode recommends (England, Scotland, Wales).
        if scalars[0].value == 0x1F3F4, scalars.count > 2, (0xE0020...0xE007F).contains(scalars[1].value) {
            let tags = scalars.dropFirst().dropLast()
            guard scalars.last?.value == 0xE007F, tags.allSatisfy({ (0xE0020...0xE007E).contains($0.value) }) else { return false }
            let region = String(String.UnicodeScalarView(tags.compactMap { Unicode.Scalar($0.value - 0xE0000) }))
            return ["gbeng", "gbsct", "gbwls"].contains(region)
        }
        // Emoji joined by ZWJ.
        var index = 0
        while index < scalars.count {
            let base = scalars[index]
            guard base.properties.isEmoji, base.value > 0x7F, !isRegional(base) else { return false }
            index += 1
            var shown = base.properties.isEmojiPresentation
            if index < scalars.count, scalars[index].value == 0xFE0F {
                shown = true
                index += 1
            }
            if index < scalars.count, isSkinTone(scalars[index]), !isSkinTone(base) {
                shown = shown || base.properties.isEmojiModifierBase
                index += 1
            }
            guard shown else { return false }
            if index == scalars.count { return true }
            // Only a joiner may follow, and something must follow it.
            guard scalars[index].value == 0x200D, index + 1 < scalars.count else { return false }
            index += 1
        }
        return false
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
