import Chat
import NIOCore

/// What subscriptions write to: a chat.v2 socket (``ChatV2Socket``), or an event stream
/// (``EventStream``). It carries out what each subscription's flow decides.
protocol SubscriptionOwner: AnyObject {
    /// A batch of `subscription`'s channel.
    func deliver(_ batch: Batch, to subscription: Subscription)
    /// A moderation event of `subscription`'s channel for its person.
    func moderated(_ delivery: Delivery, of subscription: Subscription)
    /// Whose the subscriptions are: their person's identity.
    var identity: String { get }
}

extension ChatV2Socket: SubscriptionOwner {
    var identity: String { person.member.id }
}

/// One channel of a chat.v2 socket or of an event stream: its member in the hub and its
/// own ``DeliveryFlow``, so that every subscription resumes, replays and falls behind on
/// its own while all of them write to the one connection.
///
/// Everything here runs on the connection's event loop; its ``SubscriptionOwner`` owns
/// it and ends it (``end()``) before the connection goes.
final class Subscription: HubMember, FlowHolder {
    enum State {
        /// The room's rules passed; its place and the broker's join are being taken.
        case admitting
        /// In the hub; reading where it stands (and the replay of a resume), then live.
        case open
        case ended
    }

    // Stored in this order so that they pack: one of these is kept per channel of every
    // connection.
    let channel: ChannelName
    let resume: DeliveryFlow.Resume?
    private(set) var state = State.admitting
    /// Whether `subscribed` was sent (it goes before anything else of the channel).
    var announced = false
    /// Shows who is there (every room but an inbox).
    let hasPresence: Bool
    /// The broker's join was made: the socket leaves the channel when it ends.
    var joined = false
    /// Until when (Unix ms) the socket's person is muted here, as last told; 0: not.
    var mutedUntil: Int64 = 0
    #if DEBUG
    var flow = DeliveryFlow(slowReaders: .drop)
    #else
    @exclusivity(unchecked) var flow = DeliveryFlow(slowReaders: .drop)
    #endif
    private weak var owner: (any SubscriptionOwner)?

    init(channel: ChannelName, resume: DeliveryFlow.Resume?, hasPresence: Bool, owner: any SubscriptionOwner) {
        self.channel = channel
        self.resume = resume
        self.hasPresence = hasPresence
        self.owner = owner
    }

    /// Admitted: it is in the hub now.
    func opened() {
        state = .open
    }

    /// Ends it; whether it was not ended already. The socket releases what it held.
    func end() -> Bool {
        guard state != .ended else { return false }
        state = .ended
        return true
    }

    func deliver(_ batch: Batch) {
        owner?.deliver(batch, to: self)
    }

    var identity: String? { owner?.identity }

    func moderated(_ delivery: Delivery) {
        owner?.moderated(delivery, of: self)
    }

    // The connection itself beats and goes away, once for all its subscriptions.
    func goAway() {}
    func heartbeat(now: NIODeadline) {}
}
