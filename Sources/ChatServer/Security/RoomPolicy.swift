import Chat
import HTTPTypes

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

    /// Why `identity` may not subscribe to or read `channel` (`403`, close 4403 on a
    /// chat.v1 socket), or `nil` when it may.
    static func refusal(for channel: ChannelName, identity: String?) -> Refusal? {
        func privateRoom(_ message: String) -> Refusal { Refusal(.forbidden, message, closeCode: .privateRoom) }
        if channel.rawValue.hasPrefix(inboxPrefix) {
            guard let owner = owner(ofInbox: channel) else { return privateRoom("An inbox is named inbox:<id> from an identity.") }
            return identity == owner ? nil : privateRoom("This is someone else's inbox: only its owner may read it.")
        }
        guard channel.rawValue.hasPrefix("dm:") else { return nil }
        guard let (a, b) = pair(of: channel), a < b else {
            return privateRoom("A one-to-one room is named dm:<id>:<id> from two identities, in sorted order.")
        }
        guard let identity, identity == a || identity == b else {
            return privateRoom("This is a private one-to-one room: only its two people may use it.")
        }
        return nil
    }

    /// Why `identity` may not post to `channel` (`403`), or `nil` when it may.
    static func postingRefusal(for channel: ChannelName, identity: String?) -> Refusal? {
        if channel.rawValue.hasPrefix(inboxPrefix) {
            return Refusal(.forbidden, "Nobody posts to an inbox: the server writes there when a one-to-one room has news.")
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
