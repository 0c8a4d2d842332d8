import NIOCore

/// What the broker tells the hub about a channel.
public enum ChatEvent: Sendable, Equatable {
    /// A message, in offset order.
    case message(Message)
    /// The channel's history was lost; offsets start again in `epoch`. Earlier offsets mean nothing now.
    case reset(channel: ChannelName, epoch: String)
    /// Messages `from`…`to` were published but cannot be delivered (no longer in the history).
    case gap(channel: ChannelName, from: Int64, to: Int64)
    /// How many people are in the channel now, over every instance (see ``PresenceTracker``).
    case presence(channel: ChannelName, online: Int)
    /// Everyone in the channel now (sent when a socket joined, so it can start its list).
    case members(channel: ChannelName, online: Int, members: [Member])
    /// Someone came (or changed their name).
    case join(channel: ChannelName, member: Member)
    /// Someone left, their grace period over.
    case leave(channel: ChannelName, member: Member)
    /// Someone is typing (nothing stored; for everyone but them).
    case typing(channel: ChannelName, member: Member)
    /// Someone has read the channel up to `offset` (for their own sockets; in a
    /// one-to-one room, the other person is told they saw it).
    case read(channel: ChannelName, member: Member, offset: Int64)
    /// The same, for everyone else in the room (made by the hub from `read`; only a
    /// one-to-one room's frames say it).
    case seen(channel: ChannelName, member: Member, offset: Int64)
    /// A moderator muted or banned someone, lifted a ban, or changed slow mode.
    case moderation(channel: ChannelName, change: ModerationChange)

    /// The message, if the event is one.
    public var message: Message? {
        if case .message(let message) = self { return message }
        return nil
    }

    /// Whose sockets it is for.
    public var audience: Audience {
        switch self {
        case .typing(_, let member), .seen(_, let member, _): .allBut(member.id)
        case .read(_, let member, _): .only(member.id)
        case .moderation(_, let change): change.user.map { .only($0) } ?? .everyone
        default: .everyone
        }
    }

    /// Whether the hub hands it on its own rather than in a batch: it is for some people
    /// only, or a moderation event (which members carry out, see ``HubMember/moderated(_:)``).
    public var goesAlone: Bool {
        switch self {
        case .typing, .read, .seen, .moderation: true
        default: false
        }
    }

    /// Whose sockets an event is for.
    public enum Audience: Sendable, Equatable {
        case everyone
        /// Only the sockets of this identity.
        case only(String)
        /// Every socket but this identity's.
        case allBut(String)

        public func includes(_ identity: String?) -> Bool {
            switch self {
            case .everyone: true
            case .only(let id): identity == id
            case .allBut(let id): identity != id
            }
        }
    }

    /// The channel the event is about.
    public var channel: ChannelName {
        switch self {
        case .message(let message): message.channel
        case .reset(let channel, _), .gap(let channel, _, _), .presence(let channel, _), .members(let channel, _, _),
            .join(let channel, _), .leave(let channel, _), .typing(let channel, _), .read(let channel, _, _),
            .seen(let channel, _, _), .moderation(let channel, _):
            channel
        }
    }
}

/// What the broker relays between instances without storing it: someone typing, someone
/// having read a channel. Published on the channel's pub/sub channel beside messages:
///
///     s1 t <id>[ <name>]
///     s1 r <offset> <id>[ <name>]
///     s1 m <id> <until>        muted until (Unix ms; 0: lifted)
///     s1 b <id> <until>        banned until (Unix ms; 0: until lifted)
///     s1 u <id>                ban lifted
///     s1 s <seconds>           slow mode (0: off)
enum Signal {
    static func typing(_ member: Member) -> String {
        "s1 t \(member.id)" + (member.name.map { " " + $0 } ?? "")
    }

    /// The event a signal stands for, or `nil` when the bytes are not a signal.
    static func event(channel: ChannelName, payload: ByteBuffer) -> ChatEvent? {
        guard payload.readableBytes >= 5, payload.getString(at: payload.readerIndex, length: 3) == "s1 ",
            let text = payload.getString(at: payload.readerIndex, length: payload.readableBytes)
        else { return nil }
        // The name, when there is one, is the rest of the line: split no further than it.
        let kind = text.dropFirst(3).prefix(1)
        let fields = text.split(separator: " ", maxSplits: kind == "t" ? 3 : 4, omittingEmptySubsequences: false)
        guard fields.count >= 3, fields[1] == kind else { return nil }
        switch kind {
        case "t":
            return .typing(channel: channel, member: Member(id: String(fields[2]), name: fields.count > 3 ? String(fields[3]) : nil))
        case "r":
            guard fields.count >= 4, let offset = Int64(fields[2]) else { return nil }
            return .read(channel: channel, member: Member(id: String(fields[3]), name: fields.count > 4 ? String(fields[4]) : nil), offset: offset)
        case "m", "b":
            guard fields.count == 4, let until = Int64(fields[3]) else { return nil }
            let user = String(fields[2])
            return .moderation(channel: channel, change: kind == "m" ? .muted(user, until: until) : .banned(user, until: until))
        case "u":
            guard fields.count == 3 else { return nil }
            return .moderation(channel: channel, change: .unbanned(String(fields[2])))
        case "s":
            guard fields.count == 3, let seconds = Int(fields[2]) else { return nil }
            return .moderation(channel: channel, change: .slowMode(seconds: seconds))
        default:
            return nil
        }
    }

    /// Whether the bytes are a signal (a message envelope starts `v`).
    static func isSignal(_ payload: ByteBuffer) -> Bool {
        payload.getInteger(at: payload.readerIndex, as: UInt8.self) == UInt8(ascii: "s")
    }
}
