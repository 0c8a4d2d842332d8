/// The Redis names Chatroom uses for one channel.
///
/// Every name holds the channel in a hash tag (`{…}`), so all of one channel's keys
/// live in the same Redis Cluster slot and one script may touch them together.
struct RedisKeys: Sendable {
    /// The prefix of every name, `chatroom`.
    static let prefix = "chatroom"

    /// Hash with the channel's `offset` (last offset handed out) and `epoch`.
    static func meta(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:meta" }

    /// Stream of the channel's kept messages; entry ID `<offset>-0`, fields `t` (time, ms) and `d` (data).
    static func history(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:history" }

    /// What edits, deletes and reactions made of the channel's messages: offset → state
    /// (a JSON object the scripts keep; see ``RedisBroker/publishScript``).
    static func changes(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:changes" }

    /// How far each identity has read the channel: identity → offset.
    static func reads(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:reads" }

    /// Sorted set of the leases on the channel: `<instance>|<identity>`, scored by when
    /// each ends (ms, Redis' clock).
    static func leases(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:leases" }

    /// Hash of the display names of the channel's people: identity → name.
    static func names(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:names" }

    /// Hash of the room's moderation: `m:<identity>` → end of a mute (Unix ms),
    /// `b:<identity>` → end of a ban (0: until lifted), `slow` → seconds (0: turned off). It expires with
    /// its last deadline (none while a ban without end or slow mode holds), and is not
    /// part of the history: a new epoch leaves it.
    static func moderation(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:moderation" }

    /// While slow mode is on, when each identity last posted: identity → Unix ms. Expires
    /// one slow-mode interval after the last post.
    static func lastPosts(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:posts" }

    /// A publish's idempotency key (`<sender>|<client's id>`), holding `<offset> <epoch>
    /// <time>` of the first publish with it, for the dedupe window.
    static func sent(_ channel: ChannelName, key: String) -> String { "\(prefix):{\(channel.rawValue)}:sent:\(key)" }

    /// Which instance archives the channel now (`<archiver>`), for a few seconds at a
    /// time: one at a time, so the archive gets each channel's messages in offset order.
    static func archiving(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:archiving" }

    /// The chat channel of a history stream's key, `nil` for keys Chatroom did not make.
    static func channel(ofHistory key: String) -> ChannelName? {
        channel(in: key, kind: "history")
    }

    /// A secret every instance shares, e.g. `identity-secret`.
    static func secret(_ name: String) -> String { "\(prefix):secret:\(name)" }

    /// The pub/sub channel that carries the channel's envelopes between instances.
    static func messages(_ channel: ChannelName) -> String { "\(prefix):{\(channel.rawValue)}:messages" }

    /// The chat channel of a pub/sub channel name, `nil` for names Chatroom did not make.
    static func channel(ofMessages name: String) -> ChannelName? {
        channel(in: name, kind: "messages")
    }

    /// The chat channel of `chatroom:{<channel>}:<kind>`.
    private static func channel(in name: String, kind: String) -> ChannelName? {
        let head = "\(prefix):{"
        let tail = "}:" + kind
        guard name.hasPrefix(head), name.hasSuffix(tail), name.count > head.count + tail.count else { return nil }
        return ChannelName(String(name.dropFirst(head.count).dropLast(tail.count)))
    }
}
