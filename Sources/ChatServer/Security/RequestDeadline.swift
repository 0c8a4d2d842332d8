import Chat
import Logging
import NIOCore
import NIOHTTP1

/// Slow clients (slowloris): a request's head and body must arrive within a deadline.
///
/// The clock starts when the connection opens and again when the first byte of each
/// next request arrives (``StartWatch``, first in the pipeline, sees raw bytes); it stops
/// when the request's end has been read (``EndWatch``, after the HTTP decoder). A client
/// that has not finished by then gets `408` with a message and is disconnected. Idle
/// keep-alive connections are left to the idle timeout; a WebSocket upgrade removes both
/// watches.
final class RequestDeadline {
    static let startName = "request-deadline-start"
    static let endName = "request-deadline-end"

    private let timeout: TimeAmount
    private let logger: Logger
    private let refusals: Refusals
    private var timer: Scheduled<Void>?
    private var inRequest = true

    init(timeout: TimeAmount, refusals: Refusals, logger: Logger) {
        self.timeout = timeout
        self.refusals = refusals
        self.logger = logger
    }

    fileprivate func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        let timeout = self.timeout
        let logger = self.logger
        let refusals = self.refusals
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            refusals.record(
                "Closing a connection too slow to send its request", route: "connection", reason: "timeout",
                client: channel.remoteAddress?.ipAddress ?? "unknown", logger: logger, metadata: ["timeout": "\(timeout)"]
            )
            let body = "Request timeout: the request did not arrive within \(timeout.nanoseconds / 1_000_000_000) s.\n"
            let response = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            context.writeAndFlush(NIOAny(ByteBuffer(string: response))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    fileprivate func disarm() {
        timer?.cancel()
        timer = nil
    }

    /// First in the pipeline: starts the clock on a request's first byte.
    final class StartWatch: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let deadline: RequestDeadline

        init(_ deadline: RequestDeadline) { self.deadline = deadline }

        func handlerAdded(context: ChannelHandlerContext) {
            deadline.arm(context)
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            deadline.disarm()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if !deadline.inRequest {
                deadline.inRequest = true
                deadline.arm(context)
            }
            context.fireChannelRead(data)
        }

        func channelInactive(context: ChannelHandlerContext) {
            deadline.disarm()
            context.fireChannelInactive()
        }
    }

    /// After the HTTP decoder: stops the clock when a request has been read whole.
    ///
    /// It takes any message, not only HTTP parts: during an upgrade NIO removes the
    /// decoder first, and bytes the client sent after the upgrade request (in the same
    /// read) come through here raw, before the upgrade removes this watch.
    final class EndWatch: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = Any
        let deadline: RequestDeadline

        init(_ deadline: RequestDeadline) { self.deadline = deadline }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if let part = unwrapInboundIn(data) as? HTTPServerRequestPart, case .end = part {
                deadline.inRequest = false
                deadline.disarm()
            }
            context.fireChannelRead(data)
        }
    }
}
