import Chat
import ChatServer
import Logging
import NIOCore
import NIOEmbedded

/// The server's fan-out with the network taken away: `ChatSocket` handlers on
/// `EmbeddedChannel`s, all on one `EmbeddedEventLoop`, members of one hub.
///
/// It exists to measure the per-(message × socket) work of the hot path — encoding
/// once, the hub's walk over a channel's members, each socket's write — without the
/// kernel's share, which dominates on loopback (docs/BENCHMARKS.md). The micro-benchmarks
/// in Microbench/ drive it. Use it from one thread.
public final class InProcessFanout {
    private let loop = EmbeddedEventLoop()
    private let hub: LoopHub
    private let sockets: [EmbeddedChannel]

    /// Opens `sockets` sockets on `channel`; `chatV1` picks their wire format.
    public init(sockets count: Int, channel: ChannelName, chatV1: Bool) throws {
        let loop = self.loop
        let hub = Hub(eventLoopGroup: loop, encode: ChatSockets.frames(of:)).loop(for: loop)
        self.hub = hub
        let broker = MemoryBroker { _ in }
        var logger = Logger(label: "fanout")
        logger.logLevel = .critical
        sockets = try (0..<count).map { _ in
            let embedded = EmbeddedChannel(loop: loop)
            try embedded.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            try embedded.pipeline.syncOperations.addHandler(ChatSockets.handler(channel: channel, chatV1: chatV1, hub: hub, broker: broker, logger: logger))
            return embedded
        }
    }

    /// Encodes `events` once and hands them to every socket as one drain would.
    public func deliver(_ events: [ChatEvent]) {
        hub.deliver(events.map { Delivery(event: $0, frames: ChatSockets.frames(of: $0)) })
    }

    /// Takes what the sockets wrote, as the kernel would; returns the byte count.
    @discardableResult
    public func collectWrites() throws -> Int {
        var bytes = 0
        for socket in sockets {
            while let buffer = try socket.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytes }
        }
        return bytes
    }

    /// The frames of an event in both wire formats, as the hub makes them once per event.
    public static func frames(of event: ChatEvent) -> [ByteBuffer?] {
        ChatSockets.frames(of: event)
    }
}
