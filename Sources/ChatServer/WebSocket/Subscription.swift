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
    /// Completes once the subscription ends: releases its place in the broker and the
    /// server's channel count.
    let ended: EventLoopPromise<Void>
    #if DEBUG
    var flow = DeliveryFlow(slowReaders: .drop)
    #else
    @exclusivity(unchecked) var flow = DeliveryFlow(slowReaders: .drop)
    #endif
    private weak var socket: ChatV2Socket?

    init(channel: ChannelName, resume: DeliveryFlow.Resume?, hasPresence: Bool, socket: ChatV2Socket, eventLoop: any EventLoop) {
        self.channel = channel
        self.resume = resume
        self.hasPresence = hasPresence
        self.socket = socket
        self.ended = eventLoop.makePromise()
    }

    /// Admitted: it is in the hub now.
    func opened() {
        state = .open
    }

    /// Ends it (idempotent); the socket has left the hub and the room first.
    func end() {
        guard state != .ended else { return }
        state = .ended
        ended.succeed()
    }

    func deliver(_ batch: Batch) {
        socket?.deliver(batch, to: self)
    }

    // The socket itself beats and goes away, once for all its subscriptions.
    func goAway() {}
    func heartbeat(now: NIODeadline) {}
}
