import Chat
import Foundation
import NIOCore

/// Where every message is kept for good, beside the broker's short history: PostgreSQL
/// for deployments of many instances, SQLite for one node.
///
/// Messages and the changes to them (edits, deletes, reactions) are kept as published,
/// keyed by (channel, epoch, offset), so that keeping one twice changes nothing: whoever
/// archives may replay a batch after a crash. A change also changes the message it is
/// about, as a history read shows it: an edit its text, a delete its text and every
/// edit's (gone for good), a reaction its reactions. A delete of a message the archive
/// never got (deleted before it was archived) keeps its place: a deleted message with no
/// sender, at the delete's time.
public protocol Archive: Sendable {
    /// Creates the schema, or brings an older one up to date (a version table says which).
    func prepare() async throws

    /// Keeps `messages` (each channel's in offset order), in one transaction: all or none.
    /// A message kept already is left as it is, and so is what it changed.
    func keep(_ messages: [Message]) async throws

    /// A channel's kept messages of `epoch`, oldest first: those after offset `after`,
    /// or (with `before`) the newest `limit` before that offset, or without either the
    /// newest `limit`.
    func messages(in channel: ChannelName, epoch: String, after: Int64?, before: Int64?, limit: Int) async throws -> [Message]

    /// The channel's epochs with what is kept of each, oldest first.
    func epochs(of channel: ChannelName) async throws -> [ArchivedEpoch]

    /// The epoch of the channel kept before the one that began at `time` (ms since 1970;
    /// its first kept message's): the newest other epoch with a message older than that.
    func epoch(before epoch: String, startedAt time: Int64, of channel: ChannelName) async throws -> String?

    /// What is kept of one epoch of the channel (`nil`: nothing), found through the
    /// key's index rather than by going through the channel.
    func epoch(_ epoch: String, of channel: ChannelName) async throws -> ArchivedEpoch?

    /// The channel's messages (not changes, not deleted) whose text has every word of
    /// `words`, newest first, at most `limit`.
    func search(_ words: String, in channel: ChannelName, limit: Int) async throws -> [Message]

    /// Forgets every message (and change) kept from before `time` (ms since 1970);
    /// answers how many.
    func forget(before time: Int64) async throws -> Int

    /// Ends the archive's connections.
    func close() async
}

/// One epoch of a channel, as kept.
public struct ArchivedEpoch: Sendable, Hashable {
    public var epoch: String
    /// Its first and last kept offsets.
    public var first: Int64
    public var last: Int64
    /// When its first kept message was published (ms since 1970).
    public var since: Int64

    public init(epoch: String, first: Int64, last: Int64, since: Int64) {
        self.epoch = epoch
        self.first = first
        self.last = last
        self.since = since
    }
}

/// What went wrong with the archive, in words for the log.
public struct ArchiveError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Opens the archive an `--archive-url` names.
public enum Archives {
    /// `postgres://user:password@host:port/database` (also `postgresql://`; `?sslmode=disable`
    /// or `require`, default prefer) or `sqlite:///absolute/path.db` (`sqlite://relative.db`).
    public static func open(url: String) throws(ArchiveError) -> any Archive {
        if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard !path.isEmpty else { throw ArchiveError("The SQLite archive URL names no file: write sqlite:///var/lib/chatroom/archive.db.") }
            return SQLiteArchive(path: path)
        }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return try PostgresArchive(url: url)
        }
        throw ArchiveError("The archive URL must start with postgres:// or sqlite:// (got \(String(url.prefix(24)))…).")
    }
}

// MARK: What every archive does alike

/// How kept messages become columns, and changes become what they change: the rules both
/// archives follow.
enum ArchiveRows {
    /// Highest schema version this build knows.
    static let schemaVersion = 2

    /// What a kept change does to the message it is about.
    enum Effect: Equatable {
        /// New text, edited at `time`.
        case edit(of: Int64, text: String, time: Int64)
        /// The text is gone, the message's and every edit's.
        case delete(of: Int64)
        /// `from`'s reaction `emoji` is there (`on`) or not.
        case react(of: Int64, emoji: String, from: String, on: Bool)
    }

    /// What `message` changes, if it is a change (a reaction needs its sender).
    static func effect(of message: Message) -> Effect? {
        switch message.kind {
        case .message: return nil
        case .edit(let of): return .edit(of: of, text: storable(message.text), time: message.time)
        case .delete(let of): return .delete(of: of)
        case .react(let of, let on):
            guard let from = message.from else { return nil }
            return .react(of: of, emoji: message.text, from: from, on: on)
        }
    }

    /// The reactions column: `[["👍", ["id", …]], …]`, or `nil` for none.
    static func encode(_ reactions: [MessageState.Reaction]) -> String? {
        guard !reactions.isEmpty else { return nil }
        let array: [[Any]] = reactions.map { [$0.emoji, $0.from] }
        guard let data = try? JSONSerialization.data(withJSONObject: array), let text = String(data: data, encoding: .utf8) else { return nil }
        return text
    }

    static func decode(_ text: String?) -> [MessageState.Reaction] {
        guard let text, let data = text.data(using: .utf8), let array = try? JSONSerialization.jsonObject(with: data) as? [[Any]] else { return [] }
        return array.compactMap { pair in
            guard pair.count == 2, let emoji = pair[0] as? String, let from = pair[1] as? [String] else { return nil }
            return MessageState.Reaction(emoji: emoji, from: from)
        }
    }

    /// `reactions` with `from`'s `emoji` there or not (a kept change says which: applying
    /// it twice is applying it once).
    static func setting(_ reactions: [MessageState.Reaction], emoji: String, from: String, on: Bool) -> [MessageState.Reaction] {
        var reactions = reactions
        let index = reactions.firstIndex { $0.emoji.utf8.elementsEqual(emoji.utf8) }
        if on {
            if let index {
                if !reactions[index].from.contains(from) { reactions[index].from.append(from) }
            } else {
                reactions.append(MessageState.Reaction(emoji: emoji, from: [from]))
            }
        } else if let index, let mine = reactions[index].from.firstIndex(of: from) {
            reactions[index].from.remove(at: mine)
            if reactions[index].from.isEmpty { reactions.remove(at: index) }
        }
        return reactions
    }

    /// A kept row as the message a history read returns.
    static func message(
        channel: ChannelName, epoch: String, offset: Int64, time: Int64, kind: String, sender: String?, name: String?, data: String,
        edited: Int64?, deleted: Bool, reactions: String?
    ) -> Message? {
        guard let kind = MessageKind(token: kind) else { return nil }
        var message = Message(channel: channel, offset: offset, epoch: epoch, time: time, data: .init(string: data), name: name, from: sender, kind: kind)
        if kind == .message {
            let reactions = decode(reactions)
            if edited != nil || deleted || !reactions.isEmpty {
                message.state = MessageState(edited: edited, deleted: deleted, reactions: reactions)
            }
        }
        return message
    }

    /// `text` as a database's text column holds it: PostgreSQL's text cannot hold NUL,
    /// which a message never has (``MessageText``), but a batch must never be refused
    /// for good over one character; it becomes U+FFFD.
    static func storable(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
    }

    /// An epoch's bounds from its lowest and highest kept rows (the one row twice, or
    /// none).
    static func epoch(_ epoch: String, ends: [(offset: Int64, time: Int64)]) -> ArchivedEpoch? {
        guard let first = ends.min(by: { $0.offset < $1.offset }), let last = ends.max(by: { $0.offset < $1.offset }) else { return nil }
        return ArchivedEpoch(epoch: epoch, first: first.offset, last: last.offset, since: first.time)
    }
}
