import Chat
import NIOCore

/// What every owner of subscriptions does alike: read the next page of a replay, and
/// give back what a subscription held when it ends.
extension Subscription {
    /// Reads a replay's next history page, alone (the first read is shared, see
    /// ``HistoryReads``), and hands it to `then` on `eventLoop`.
    func readHistory(_ read: DeliveryFlow.HistoryRead, from reads: HistoryReads, on eventLoop: any EventLoop, then: @escaping (Result<History, any Error>) -> Void) {
        reads.readPage(read, of: channel, on: eventLoop, answer: then)
    }

    /// Ends the subscription and gives back what it held: its place in the hub and the
    /// room (if it was open), the broker's join once made, its channel count. The owner
    /// has removed it from its subscriptions.
    func release(from hub: LoopHub, server: ChatServerContext, person: String) {
        let wasOpen = state == .open
        guard end() else { return }
        if wasOpen {
            hub.remove(self, from: channel)
            if hasPresence { server.presence.leave(channel, id: person) }
        }
        if joined { server.broker.leave(channel) }
        server.gatekeeper.releaseChannel(channel)
    }
}
