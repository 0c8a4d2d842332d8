// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// Where a request comes from, as its `Origin` says: whether it is the server's own page.
enum PageOrigin {
    /// Whether a request with `origin` comes from the chat's own pages: no `Origin` (not
    /// a browser's cross-origin request); with `--allowed-origins`, one of them; without,
    /// an `http` or `https` origin whose host is the request's `Host` (ports are not
    /// compared: a proxy's `Host` often lacks the public one, and cookies do not tell
    /// ports apart either). Behind a proxy, pass the public `Host` on (nginx:
    /// `proxy_set_header Host $host`) or list the public origin in `--allowed-origins`.
    static func isOwnPage(origin: String?, authority: String?, allowedOrigins: Set<String>?) -> Bool {
        guard let origin else { return true }
        if let allowedOrigins { return allowedOrigins.contains(origin) }
        let lowered = origin.lowercased()
        let rest: Substring
        if lowered.hasPrefix("https://") {
            rest = lowered.dropFirst(8)
        } else if lowered.hasPrefix("http://") {
            rest = lowered.dropFirst(7)
        } else {
            return false
        }
        guard let host = hostname(rest), let authority, let own = hostname(authority.lowercased()[...]) else { return false }
        return host == own
    }

    /// `host[:port]` without its port (an IPv6 literal keeps its brackets); `nil` when it
    /// is not a host: empty, or with characters no host name has.
    private static func hostname(_ authority: Substring) -> String? {
        let host: Substring
        if authority.hasPrefix("[") {
            guard let end = authority.firstIndex(of: "]") else { return nil }
            host = authority[...end]
            guard host.count > 2, host.dropFirst().dropLast().allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else {
            host = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            guard !host.isEmpty, host.allSatisfy({ $0.isLetter && $0.isASCII || $0.isNumber && $0.isASCII || $0 == "-" || $0 == "." }) else { return nil }
        }
        let rest = authority[host.endIndex...]
        guard rest.isEmpty || rest.hasPrefix(":") && rest.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return String(host)
    }
}
