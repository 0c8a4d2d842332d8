/// libFuzzer target `archive`: what the archive's routes and `chatroom export` read from
/// a client or an operator. The input (as text) is split at its first two newlines into a
/// search's `q`, an `Origin` and a `Host`; the whole of it is also an export's `--since`.
/// Invariants: a search has 1…16 words, none empty, none with a quote, a backslash or a
/// control character (the databases' query syntax and what they refuse); an `Origin` is
/// the page's own only if it is `http(s)://` and its host is the `Host`'s (and always
/// when allowed by name); a `--since` read is within ±2^53 ms.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let parts = text.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
    let q = parts[0]
    if let words = SearchWords.parse(q) {
        guard (1...SearchWords.maximumWords).contains(words.count) else { fatalError("\(words.count) words") }
        for word in words {
            guard !word.isEmpty, !word.unicodeScalars.contains(where: { $0 == "\"" || $0 == "'" || $0 == "\\" || $0.properties.generalCategory == .control }) else {
                fatalError("word \(word.debugDescription)")
            }
        }
    }
    let origin = parts.count > 1 ? parts[1] : nil
    let authority = parts.count > 2 ? parts[2] : nil
    if PageOrigin.isOwnPage(origin: origin, authority: authority, allowedOrigins: nil), let origin {
        let lowered = origin.lowercased()
        guard lowered.hasPrefix("http://") || lowered.hasPrefix("https://"), authority != nil else { fatalError("own page: \(origin.debugDescription)") }
    }
    if let origin {
        guard PageOrigin.isOwnPage(origin: origin, authority: authority, allowedOrigins: [origin]) else { fatalError("an allowed origin refused") }
        guard !PageOrigin.isOwnPage(origin: origin, authority: authority, allowedOrigins: []) else { fatalError("no origin is allowed") }
    }
    if let since = TranscriptSince.parse(text) {
        guard abs(since) <= 9_007_199_254_740_991 else { fatalError("since \(since)") }
    }
    return 0
}
