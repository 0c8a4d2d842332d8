// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// A sender's nickname, as `/send/` and the socket upgrade accept it: at most 32
/// characters and 128 bytes of UTF-8 once trimmed, no control or format characters and
/// no line breaks.
///
/// Both bounds count: 32 characters can hide any number of bytes behind combining marks
/// (`Z` and 30,000 accents is one character), and a name is repeated in every
/// `members` and `join` frame of its room.
public enum SenderName {
    /// Longest name, in characters (grapheme clusters).
    public static let maximumLength = 32
    /// Longest name, in bytes of UTF-8.
    public static let maximumBytes = 128

    /// Why `name` is refused, or `nil` when it is fine. An empty name means "no name".
    public static func problem(with name: String) -> String? {
        // Bytes first: counting characters of a huge name is work for the server.
        if name.utf8.count > 4 * maximumBytes { return "a name has at most \(maximumBytes) bytes, got \(name.utf8.count)" }
        let trimmed = name.trimmingWhitespace
        if trimmed.utf8.count > maximumBytes { return "a name has at most \(maximumBytes) bytes, got \(trimmed.utf8.count)" }
        if trimmed.count > maximumLength { return "a name has at most \(maximumLength) characters, got \(trimmed.count)" }
        if trimmed.unicodeScalars.contains(where: { [.control, .format, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory) }) {
            return "a name cannot hold control characters or line breaks"
        }
        return nil
    }

    /// The name as stored: trimmed; `nil` when empty.
    public static func normalized(_ name: String?) -> String? {
        guard let trimmed = name?.trimmingWhitespace, !trimmed.isEmpty else { return nil }
        return trimmed
    }
}

extension String {
    /// Without leading and trailing white space.
    var trimmingWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
