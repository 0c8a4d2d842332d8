import Chat
import Logging
import NIOCore

/// The `/wb/` socket handler and frames, for code of this package that runs the server's
/// sockets without a network (the micro-benchmarks' `InProcessFanout`).
package enum ChatSockets {
    /// Shared by every such socket; none of them is ever refused anything.
    private static let refusals = Refusals()

    /// A socket's handler on `channel`, member of `hub`, as the upgrade makes it for a
    /// client that resumes nothing and compresses nothing. Its limits never refuse a
    /// benchmark: 64 KiB messages, a 1 MiB queue, no message rate.
    package static func handler(channel: ChannelName, chatV1: Bool, hub: LoopHub, broker: any Broker, logger: Logger) -> any ChannelHandler {
        let settings = ChatSocket.Settings(maximumMessageSize: 64 * 1024, closeTimeout: .seconds(1), queueLimit: 1 << 20, messageRate: nil)
        return ChatSocket(
            channelName: channel, kind: FrameKind(format: chatV1 ? .chatV1 : .raw, deflate: nil), resume: nil,
            hub: hub, broker: broker, reads: HistoryReads(store: HistoryStore(broker: broker), eventLoopGroup: hub.eventLoop), settings: settings, refusals: refusals, client: "127.0.0.1", logger: logger
        )
    }

    /// The frames of an event in both wire formats, as the hub makes them once per event.
    package static func frames(of event: ChatEvent) -> [ByteBuffer?] {
        WireFormat.frames(of: event)
    }
}
