import Chat
import NIOCore

/// One channel of a chat.v2 socket: its member in the hub and its own ``DeliveryFlow``,
/// so that every subscription resumes, replays and falls behind on its own while all of
/// them write to the one socket.
///
/// Everything here runs on the socket's event loop; ``ChatV2Socket`` owns it and ends
/// it (``end()``) before the socket goes.
final class Subscription: HubMember, FlowHolder {
    enum State {
        /// The room's rules passed; its place and the broker's join are being taken.
        case admitting
        /// In the hub; reading where it stands (and the replay of a resume), then live.
        case open
        case ended
    }

    let channel: ChannelName
    private(set) var state = State.admitting
    /// Whether `subscribed` was sent (it goes before anything else of the channel).
    var announced = false
    /// Shows who is there (every room but an inbox).
    let hasPresence: Bool
    let resume: DeliveryFlow.Resume?
    /// The broker's join was made: the socket leaves the channel when it ends.
    var joined = false
    /// Until when (Unix ms) the socket's person is muted here, as last told; 0: not.
    var mutedUntil: Int64 = 0
    #if DEBUG
    var flow = DeliveryFlow(slowReaders: .drop)
    #else
    @exclusivity(unchecked) var flow = DeliveryFlow(slowReaders: .drop)
    #endif
    private weak var socket: ChatV2Socket?

    init(channel: ChannelName, resume: DeliveryFlow.Resume?, hasPresence: Bool, socket: ChatV2Socket) {
        self.channel = channel
        self.resume = resume
        self.hasPresence = hasPresence
        self.socket = socket
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
        socket?.deliver(batch, to: self)
    }

    var identity: String? { socket?.person.member.id }

    func moderated(_ delivery: Delivery) {
        socket?.moderated(delivery, of: self)
    }

    // The socket itself beats and goes away, once for all its subscriptions.
    func goAway() {}
    func heartbeat(now: NIODeadline) {}
}
