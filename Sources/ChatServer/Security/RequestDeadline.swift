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
    /// When the request being read must have arrived.
    private var due = NIODeadline.distantFuture

    init(timeout: TimeAmount, refusals: Refusals, logger: Logger) {
        self.timeout = timeout
        self.refusals = refusals
        self.logger = logger
    }

    /// Starts the clock. A timer is scheduled only when none is: one that fires early
    /// (a later request moved the deadline) schedules itself again for what is left, so
    /// a keep-alive connection costs one timer per timeout, not one per request.
    fileprivate func arm(_ context: ChannelHandlerContext) {
        inRequest = true
        due = .now() + timeout
        if timer == nil { schedule(at: due, context) }
    }

    private func schedule(at deadline: NIODeadline, _ context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            guard inRequest else { return }
            guard NIODeadline.now() >= due else { return schedule(at: due, context) }
            expire(context)
        }
    }

    private func expire(_ context: ChannelHandlerContext) {
        let channel = context.channel
        refusals.record(
            "Closing a connection too slow to send its request", route: "connection", reason: "timeout",
            client: channel.remoteAddress?.ipAddress ?? "unknown", logger: logger, metadata: ["timeout": "\(timeout)"]
        )
        let body = "Request timeout: the request did not arrive within \(timeout.nanoseconds / 1_000_000_000) s.\n"
        let response = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(ByteBuffer(string: response))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The request arrived whole: the timer, if any, finds nothing to do.
    fileprivate func stop() {
        inRequest = false
    }

    fileprivate func disarm() {
        inRequest = false
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
            if !deadline.inRequest { deadline.arm(context) }
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
                deadline.stop()
            }
            context.fireChannelRead(data)
        }
    }
}
