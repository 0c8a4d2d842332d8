/// What a moderator does to a room: mute or ban a person, lift a ban, slow the room down.
///
/// Every number is bounded by ``longest`` (the caller checks it before asking the broker).
public enum ModerationAction: Sendable, Equatable {
    /// The person's messages, edits and reactions are refused for `seconds`; 0 lifts a mute.
    case mute(String, seconds: Int)
    /// The person may not read, join or post for `seconds`; 0: until the ban is lifted.
    case ban(String, seconds: Int)
    /// Lifts a ban.
    case unban(String)
    /// One message per person every `seconds`; 0 turns slow mode off.
    case slowMode(seconds: Int)
    /// Slow mode set at start (`--slow-mode`): only when the room has no setting of its
    /// own yet (a moderator's, 0 included), so that a moderator's change outlives restarts.
    case defaultSlowMode(seconds: Int)

    /// The longest mute, ban or slow mode: a year.
    public static let longest = 31_536_000

    /// The action's name in routes, frames, logs and metrics.
    public var name: String {
        switch self {
        case .mute: "mute"
        case .ban: "ban"
        case .unban: "unban"
        case .slowMode, .defaultSlowMode: "slowmode"
        }
    }

    /// The person it is about, if any.
    public var user: String? {
        switch self {
        case .mute(let user, _), .ban(let user, _), .unban(let user): user
        case .slowMode, .defaultSlowMode: nil
        }
    }

    /// Its seconds, if it has any.
    public var seconds: Int? {
        switch self {
        case .mute(_, let seconds), .ban(_, let seconds), .slowMode(let seconds), .defaultSlowMode(let seconds): seconds
        case .unban: nil
        }
    }
}

/// What an action changed, as every instance is told (``ChatEvent/moderation(channel:change:)``).
///
/// Times are Unix milliseconds.
public enum ModerationChange: Sendable, Equatable {
    /// Muted until `until`; 0: the mute was lifted.
    case muted(String, until: Int64)
    /// Banned until `until`; 0: until the ban is lifted.
    case banned(String, until: Int64)
    case unbanned(String)
    /// Slow mode is `seconds` now (0: off).
    case slowMode(seconds: Int)

    /// The person it is about, if any.
    public var user: String? {
        switch self {
        case .muted(let user, _), .banned(let user, _), .unbanned(let user): user
        case .slowMode: nil
        }
    }
}

/// What the broker did with an action.
public struct ModerationOutcome: Sendable, Equatable {
    /// What changed; `nil` when nothing did (a default slow mode in a room that has its own).
    public var change: ModerationChange?
    /// The room's moderation after it.
    public var room: RoomModeration

    public init(change: ModerationChange?, room: RoomModeration) {
        self.change = change
        self.room = room
    }
}

/// One room's mutes, bans and slow mode, as the broker keeps them.
public struct RoomModeration: Sendable, Equatable {
    /// Identity → end of the mute (Unix ms).
    public var mutes: [String: Int64] = [:]
    /// Identity → end of the ban (Unix ms); 0: until lifted.
    public var bans: [String: Int64] = [:]
    /// Seconds between two messages of one person; 0: turned off by a moderator (which
    /// `--slow-mode` at start leaves alone); `nil`: never set.
    public var slowMode: Int?

    /// A room nobody moderated.
    public static let none = RoomModeration()

    public init(mutes: [String: Int64] = [:], bans: [String: Int64] = [:], slowMode: Int? = nil) {
        self.mutes = mutes
        self.bans = bans
        self.slowMode = slowMode
    }

    /// The time moderation is judged by: Unix ms, this instance's clock.
    public static var now: Int64 { Epoch.nowMilliseconds() }

    /// Whether `identity` is banned at `now` (Unix ms).
    public func isBanned(_ identity: String?, now: Int64) -> Bool {
        guard let identity, let until = bans[identity] else { return false }
        return until == 0 || until > now
    }

    /// When `identity`'s ban ends (Unix ms; 0: when lifted), if they are banned at `now`.
    public func bannedUntil(_ identity: String?, now: Int64) -> Int64? {
        guard let identity, let until = bans[identity], until == 0 || until > now else { return nil }
        return until
    }

    /// When `identity`'s mute ends, if they are muted at `now` (Unix ms).
    public func mutedUntil(_ identity: String?, now: Int64) -> Int64? {
        guard let identity, let until = mutes[identity], until > now else { return nil }
        return until
    }

    /// Nothing in force at `now`: no instance needs to check anything.
    public func isEmpty(now: Int64) -> Bool {
        slowMode == nil && !bans.values.contains { $0 == 0 || $0 > now } && !mutes.values.contains { $0 > now }
    }

    /// The room after `change`.
    public mutating func apply(_ change: ModerationChange) {
        switch change {
        case .muted(let user, let until): mutes[user] = until == 0 ? nil : until
        case .banned(let user, let until): bans[user] = until
        case .unbanned(let user): bans[user] = nil
        case .slowMode(let seconds): slowMode = seconds
        }
    }

    /// Why a publish from `from` is refused, if it is: banned (403), muted (403, for
    /// messages, edits and reactions; deleting one's own words stays allowed), or slow
    /// mode (429 with the wait) for a message less than ``slowMode`` seconds after
    /// `lastPost`. `exempt` senders (moderators, holders of the publish token) skip slow
    /// mode. The Redis broker's publish script applies the same rules.
    public func refusal(from: String?, kind: MessageKind, exempt: Bool, lastPost: Int64?, now: Int64) -> BrokerError? {
        guard let from else { return nil }
        if isBanned(from, now: now) { return BrokerError(.refused(status: 403), Self.bannedWords, reason: "banned") }
        if case .delete = kind { return nil }
        if let until = mutedUntil(from, now: now) {
            return BrokerError(.refused(status: 403), Self.mutedWords(secondsLeft: Self.secondsLeft(until, now: now)), reason: "muted")
        }
        guard case .message = kind, let slowMode, slowMode > 0, !exempt, let lastPost else { return nil }
        let next = lastPost + Int64(slowMode) * 1000
        guard next > now else { return nil }
        let wait = Self.secondsLeft(next, now: now)
        var error = BrokerError(.refused(status: 429), Self.slowWords(seconds: slowMode, wait: wait), reason: "slow_mode")
        error.retryAfter = wait
        return error
    }

    /// Whole seconds from `now` to `until`, rounded up.
    public static func secondsLeft(_ until: Int64, now: Int64) -> Int {
        Int(max(1, (until - now + 999) / 1000))
    }

    /// Most mutes and bans a room holds at once: an action's cost in Redis grows with them,
    /// and Redis serves every room meanwhile.
    public static let maximumEntries = 1000

    /// The refusal of a mute or ban past ``maximumEntries``.
    public static var fullWords: String {
        "This room holds as many mutes and bans as it may (\(maximumEntries)); lift some, or wait for some to end."
    }

    /// What a banned person is told, everywhere.
    public static let bannedWords = "You are banned from this room."

    /// What a muted person is told when they send.
    public static func mutedWords(secondsLeft: Int) -> String {
        "You are muted in this room for \(secondsLeft) more \(secondsLeft == 1 ? "second" : "seconds")."
    }

    /// What a person is told who sends again too soon in slow mode.
    static func slowWords(seconds: Int, wait: Int) -> String {
        "This room is in slow mode: one message every \(seconds) s per person. Wait \(wait) more \(wait == 1 ? "second" : "seconds")."
    }
}
