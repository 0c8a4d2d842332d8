/// What an entry of a channel's history is: a person's words, or a change to words
/// published earlier in the channel (`of`: their offset).
///
/// A change takes an offset of its own, so resume and hole filling carry it in order
/// like any message.
public enum MessageKind: Sendable, Hashable {
    case message
    /// New text for message `of` (the text is the change's `data`).
    case edit(of: Int64)
    /// Message `of` is gone, text and all.
    case delete(of: Int64)
    /// The sender's reaction (the change's `data`, one emoji) to message `of` is now
    /// there (`on`) or no longer.
    case react(of: Int64, on: Bool)

    /// The message a change is about; `nil` for words.
    public var target: Int64? {
        switch self {
        case .message: nil
        case .edit(let of), .delete(let of), .react(let of, _): of
        }
    }

    /// How envelopes and stored entries write it: `m`, `e<of>`, `d<of>`, `r<of>` (a
    /// reaction on) or `u<of>` (off).
    public var token: String {
        switch self {
        case .message: "m"
        case .edit(let of): "e\(of)"
        case .delete(let of): "d\(of)"
        case .react(let of, let on): (on ? "r" : "u") + "\(of)"
        }
    }

    /// Reads ``token``.
    public init?(token: some StringProtocol) {
        guard let first = token.first else { return nil }
        if first == "m", token.count == 1 {
            self = .message
            return
        }
        guard let of = Int64(token.dropFirst()), of > 0 else { return nil }
        switch first {
        case "e": self = .edit(of: of)
        case "d": self = .delete(of: of)
        case "r": self = .react(of: of, on: true)
        case "u": self = .react(of: of, on: false)
        default: return nil
        }
    }
}

/// What the changes published after a message made of it: the final state a history
/// read shows (its `data` is then the newest text).
public struct MessageState: Sendable, Hashable {
    /// When it was last edited (ms since 1970).
    public var edited: Int64?
    /// Whether it was deleted (its text is gone; `data` is empty).
    public var deleted: Bool
    /// Who reacted with what, in the order the emoji first came.
    public var reactions: [Reaction]

    public struct Reaction: Sendable, Hashable {
        public var emoji: String
        /// Identities, in the order they reacted.
        public var from: [String]

        public init(emoji: String, from: [String]) {
            self.emoji = emoji
            self.from = from
        }
    }

    public init(edited: Int64? = nil, deleted: Bool = false, reactions: [Reaction] = []) {
        self.edited = edited
        self.deleted = deleted
        self.reactions = reactions
    }

    /// Most distinct emoji on one message.
    public static let maximumReactions = 20
    /// Most reactions on one message, all emoji together.
    public static let maximumReactors = 1000

    /// Toggles `from`'s reaction `emoji`; whether it is on now, or `nil` when it would
    /// be one emoji too many (``maximumReactions``) or one reaction too many
    /// (``maximumReactors``).
    public mutating func toggle(_ emoji: String, from: String) -> Bool? {
        // Bytes, as the Redis script compares them (Swift's == would take canonically
        // equivalent sequences for one).
        if let index = reactions.firstIndex(where: { $0.emoji.utf8.elementsEqual(emoji.utf8) }) {
            if let mine = reactions[index].from.firstIndex(of: from) {
                reactions[index].from.remove(at: mine)
                if reactions[index].from.isEmpty { reactions.remove(at: index) }
                return false
            }
            guard reactors < Self.maximumReactors else { return nil }
            reactions[index].from.append(from)
            return true
        }
        guard reactions.count < Self.maximumReactions, reactors < Self.maximumReactors else { return nil }
        reactions.append(Reaction(emoji: emoji, from: [from]))
        return true
    }

    /// How many reactions the message has, all emoji together.
    public var reactors: Int {
        reactions.reduce(0) { $0 + $1.from.count }
    }
}
