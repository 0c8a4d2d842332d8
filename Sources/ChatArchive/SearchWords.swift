// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// The words of a search (`GET /search?q=`) as both archives' full-text queries take them.
enum SearchWords {
    /// At most this many words are searched for.
    static let maximumWords = 16

    /// `words` as a full-text query: each word quoted (no operators from the person
    /// searching), all of them required, control characters (which no message holds, and
    /// neither database takes in a query) left out; `nil` when there is no word.
    static func parse(_ words: String) -> [String]? {
        let split = words.split { $0.isWhitespace || $0.isPunctuation && $0 != "_" && $0 != "-" }
            .map { String($0.unicodeScalars.filter { $0 != "\"" && $0 != "'" && $0 != "\\" && $0.properties.generalCategory != .control }) }
            .filter { !$0.isEmpty }
        return split.isEmpty ? nil : Array(split.prefix(maximumWords))
    }
}
