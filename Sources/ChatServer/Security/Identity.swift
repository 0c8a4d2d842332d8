import Chat
import NIOCore

/// Who a browser is, without accounts: the `uid` cookie the server issues.
///
///     uid=<id>.<base64url(HMAC-SHA256(secret, "uid\n" + id))>
///
/// `id` is 11 random bytes (88 bits) in base64url: 15 characters, short enough for Swift
/// to keep inside the string value, with no allocation per socket. Every instance shares the
/// secret (`--identity-secret`, or one kept in the broker), so any instance recognises
/// any instance's cookies. A cookie whose signature does not match is ignored — the
/// browser gets a new identity — and never trusted. The nickname is only a display name;
/// the id is who someone is (presence, member caps, one-to-one rooms).
struct Identities: Sendable {
    /// The cookie's name.
    static let cookieName = "uid"
    private let key: [UInt8]

    init(secret: String) {
        key = Array(secret.utf8)
    }

    /// A new identity's cookie value.
    func mint() -> (id: String, cookie: String) {
        let id = Base64URL.encode(HMACSHA256.randomBytes(11))
        return (id, id + "." + signature(of: id))
    }

    /// The id in a cookie value, when its signature is right.
    func verify(_ cookie: String?) -> String? {
        guard let cookie, cookie.utf8.count <= 128, let dot = cookie.firstIndex(of: ".") else { return nil }
        let id = String(cookie[..<dot])
        guard Self.isID(id), let given = Base64URL.decode(String(cookie[cookie.index(after: dot)...])) else { return nil }
        return HMACSHA256.constantTimeEqual(given, mac(of: id)) ? id : nil
    }

    /// The verified id in a request's `Cookie` header values, if any.
    func identity(cookies: [String]) -> String? {
        verify(CookieHeader.value(Self.cookieName, in: cookies))
    }

    /// The `Set-Cookie` value that gives a browser `cookie` for a year.
    static func setCookie(_ cookie: String) -> String {
        "\(cookieName)=\(cookie); Max-Age=31536000; Path=/; SameSite=Lax"
    }

    /// Whether `text` has the shape of an id: 15 base64url characters.
    static func isID(_ text: some StringProtocol) -> Bool {
        text.utf8.count == 15 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 45 || $0 == 95 }
    }

    private func mac(of id: String) -> [UInt8] {
        HMACSHA256.mac(key: key, message: Array("uid\n\(id)".utf8))
    }

    private func signature(of id: String) -> String {
        Base64URL.encode(mac(of: id))
    }
}

/// Which rooms are capped and which are private.
///
/// A one-to-one room is named `dm:<id>:<id>` from the two identities, sorted: only those
/// two may open sockets on it, read its history or post to it, and it holds two people.
/// An inbox, `inbox:<id>`, is one person's: only they may open sockets on it or read it,
/// and only the server writes to it (a notice per message of a one-to-one room, to the
/// other person). Any other room holds as many people (distinct identities, over every
/// instance) as its cap: its own from `--channels name:cap`, else `--max-members`, else
/// no limit.
struct RoomPolicy: Sendable {
    var defaultCap: Int?
    var caps: [ChannelName: Int]

    /// The two ids of a one-to-one room, or `nil` for any other room.
    static func pair(of channel: ChannelName) -> (String, String)? {
        let parts = channel.rawValue.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "dm", Identities.isID(parts[1]), Identities.isID(parts[2]) else { return nil }
        return (String(parts[1]), String(parts[2]))
    }

    /// The one-to-one room of two ids.
    static func directRoom(_ a: String, _ b: String) -> ChannelName? {
        ChannelName("dm:" + [a, b].sorted().joined(separator: ":"))
    }

    /// The owner of an inbox, or `nil` for any other room.
    static func owner(ofInbox channel: ChannelName) -> String? {
        let name = channel.rawValue
        guard name.hasPrefix(inboxPrefix) else { return nil }
        let id = name.dropFirst(inboxPrefix.count)
        return Identities.isID(id) ? String(id) : nil
    }

    /// The inbox of an id.
    static func inbox(of id: String) -> ChannelName? {
        ChannelName(inboxPrefix + id)
    }

    static let inboxPrefix = "inbox:"

    /// Why `identity` may not subscribe to or read `channel`, or `nil` when it may.
    static func refusal(for channel: ChannelName, identity: String?) -> String? {
        if channel.rawValue.hasPrefix(inboxPrefix) {
            guard let owner = owner(ofInbox: channel) else { return "An inbox is named inbox:<id> from an identity." }
            return identity == owner ? nil : "This is someone else's inbox: only its owner may read it."
        }
        guard channel.rawValue.hasPrefix("dm:") else { return nil }
        guard let (a, b) = pair(of: channel), a < b else {
            return "A one-to-one room is named dm:<id>:<id> from two identities, in sorted order."
        }
        guard let identity, identity == a || identity == b else {
            return "This is a private one-to-one room: only its two people may use it."
        }
        return nil
    }

    /// Why `identity` may not post to `channel`, or `nil` when it may.
    static func postingRefusal(for channel: ChannelName, identity: String?) -> String? {
        if channel.rawValue.hasPrefix(inboxPrefix) {
            return "Nobody posts to an inbox: the server writes there when a one-to-one room has news."
        }
        return refusal(for: channel, identity: identity)
    }

    /// How many people `channel` holds, or `nil` for no limit. An inbox is no room: only
    /// its owner may open it, in as many tabs as they like.
    func cap(of channel: ChannelName) -> Int? {
        if Self.owner(ofInbox: channel) != nil { return nil }
        if Self.pair(of: channel) != nil { return 2 }
        return caps[channel] ?? defaultCap
    }
}
