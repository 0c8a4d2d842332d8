import NIOCore
import Redis

/// An entry of a channel's history stream in Redis, read back into a ``Message``.
///
/// Fields: `t` time, `d` data, `n` name, `f` sender's identity, `k` the kind of a change
/// (``MessageKind/token``; absent for a message). With the state the history script
/// returns beside it (see ``RedisBroker/historyScript``): a deleted message or edit is
/// a ghost, no longer in the stream, read from its state alone.
enum StoredEntry {
    static func message(channel: ChannelName, offset: Int64, epoch: String, fields: [RESPValue]?, state: [RESPValue]?) -> Message? {
        var time: Int64 = 0
        var data: ByteBuffer?
        var name: String?
        var from: String?
        var kind = MessageKind.message
        if let fields {
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                switch fields[index].string {
                case "t": time = fields[index + 1].integer ?? 0
                case "d": if case .bulkString(let bytes) = fields[index + 1] { data = bytes }
                case "n": name = fields[index + 1].string
                case "f": from = fields[index + 1].string
                case "k":
                    guard let parsed = fields[index + 1].string.flatMap({ MessageKind(token: $0) }) else { return nil }
                    kind = parsed
                default: break
                }
            }
        }
        guard let state, state.count == 5 else {
            guard let data else { return nil }
            return Message(channel: channel, offset: offset, epoch: epoch, time: time, data: data, name: name, from: from, kind: kind)
        }
        var final = MessageState()
        if let edited = state[0].integer, edited > 0 { final.edited = edited }
        final.deleted = (state[1].integer ?? 0) > 0
        if case .bulkString(let text) = state[2] { data = text }
        let reactions = state[3].array ?? []
        for index in stride(from: 0, to: reactions.count - 1, by: 2) {
            guard let emoji = reactions[index].string else { continue }
            final.reactions.append(MessageState.Reaction(emoji: emoji, from: (reactions[index + 1].array ?? []).compactMap(\.string)))
        }
        if fields == nil {
            // A ghost: a deleted message, or an edit of one.
            guard let ghost = state[4].array, ghost.count == 4 else { return nil }
            time = ghost[0].integer ?? 0
            from = ghost[1].string
            name = ghost[2].string
            if let token = ghost[3].string {
                guard let parsed = MessageKind(token: token) else { return nil }
                kind = parsed
            }
            final.deleted = true
        }
        if final.deleted {
            data = ByteBuffer()
            final.edited = nil
        }
        return Message(channel: channel, offset: offset, epoch: epoch, time: time, data: data ?? ByteBuffer(), name: name, from: from, kind: kind, state: final)
    }
}
