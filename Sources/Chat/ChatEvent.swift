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

    /// The message, if the event is one.
    public var message: Message? {
        if case .message(let message) = self { return message }
        return nil
    }

    /// The channel the event is about.
    public var channel: ChannelName {
        switch self {
        case .message(let message): message.channel
        case .reset(let channel, _), .gap(let channel, _, _), .presence(let channel, _), .members(let channel, _, _),
            .join(let channel, _), .leave(let channel, _):
            channel
        }
    }
}
