// Imports nothing: scripts/fuzz.sh compiles this file (with FormData.swift) into a
// libFuzzer target on its own.

/// permessage-deflate (RFC 7692), the lean way: the server always compresses without
/// context takeover, so one compressed copy of a message serves every socket that
/// negotiated the extension.
///
/// Outbound: a message at least `minimumSize` bytes long is deflated once per message
/// (not per socket) by ``FrameEncoder`` and sent with RSV1 set; shorter ones go as they
/// are, which the RFC allows per message. Inbound: a socket inflates a client's
/// compressed message with an inflater made the first time it needs one, so idle
/// sockets pay nothing for the extension.
enum PerMessageDeflate {
    /// The extension's name in `Sec-WebSocket-Extensions`.
    static let name = "permessage-deflate"

    /// What the server agreed with one client.
    struct Agreement: Equatable, Sendable {
        /// The client resets its compression context after each message: the server
        /// may drop its inflater between messages.
        var clientNoContextTakeover: Bool

        /// The `Sec-WebSocket-Extensions` answer.
        var responseHeader: String {
            // The server insists on server_no_context_takeover (RFC 7692 §7.1.1.1 lets
            // it add the parameter): that is what makes one compressed copy shareable.
            name + "; server_no_context_takeover" + (clientNoContextTakeover ? "; client_no_context_takeover" : "")
        }
    }

    /// Picks the first offer of permessage-deflate the server can accept from the
    /// `Sec-WebSocket-Extensions` values of a request; `nil` declines them all.
    ///
    /// Declined: offers with unknown, nameless or repeated parameters (§7.1), and offers
    /// asking for `server_max_window_bits` below 15 — the shared compressed copy uses a
    /// 32 KB window. Empty parameters (`permessage-deflate; `, a stray `;`) are ignored:
    /// careless but honest clients send them.
    static func negotiate(_ headerValues: [String]) -> Agreement? {
        for offer in headerValues.lazy.flatMap({ $0.split(separator: ",") }) {
            let parts = offer.split(separator: ";", omittingEmptySubsequences: false).map(\.trimmingSpaces)
            guard parts.first == name[...] else { continue }
            var seen: Set<Substring> = []
            var acceptable = true
            var clientNoContextTakeover = false
            for parameter in parts.dropFirst() where !parameter.isEmpty {
                let pieces = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(\.trimmingSpaces)
                let key = pieces[0]
                var value = pieces.count > 1 ? pieces[1] : nil
                if let quoted = value, quoted.count >= 2, quoted.first == "\"", quoted.last == "\"" { value = quoted.dropFirst().dropLast() }
                guard !key.isEmpty, seen.insert(key).inserted else { acceptable = false; break }
                switch key {
                case "server_no_context_takeover":
                    acceptable = value == nil
                case "client_no_context_takeover":
                    acceptable = value == nil
                    clientNoContextTakeover = true
                case "server_max_window_bits":
                    acceptable = value == "15"
                case "client_max_window_bits":
                    // The client may use a smaller window; the server inflates with 15 bits,
                    // which reads any window. A value, if given, must be 8–15.
                    acceptable = value.map { Int($0).map { (8...15).contains($0) } ?? false } ?? true
                default:
                    acceptable = false
                }
                if !acceptable { break }
            }
            if acceptable { return Agreement(clientNoContextTakeover: clientNoContextTakeover) }
        }
        return nil
    }
}
