import Chat

/// The subscriptions of one connection, by channel.
///
/// A list, not a dictionary: a connection holds at most `--max-subscriptions` (100 by
/// default, 10 on a typical page), looked up only when the client names a channel or a
/// history read answers, while it is held for as long as the connection is open. Ten
/// subscriptions cost 80 bytes of list instead of about 450 of hash table.
struct Subscriptions {
    private var list: ContiguousArray<Subscription> = []

    subscript(channel: ChannelName) -> Subscription? {
        get { list.first { $0.channel == channel } }
        set {
            let place = list.firstIndex { $0.channel == channel }
            switch (place, newValue) {
            case (let place?, let subscription?): list[place] = subscription
            case (let place?, nil): list.remove(at: place)
            case (nil, let subscription?): list.append(subscription)
            case (nil, nil): break
            }
        }
    }

    /// Takes the subscription of `channel` out, if there is one.
    mutating func removeValue(forKey channel: ChannelName) -> Subscription? {
        guard let place = list.firstIndex(where: { $0.channel == channel }) else { return nil }
        return list.remove(at: place)
    }

    var count: Int { list.count }
    var isEmpty: Bool { list.isEmpty }
    /// Every subscription, in the order they were made.
    var values: ContiguousArray<Subscription> { list }
}
