import Chat
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// `GET /events` in the NIO pipeline, before the router: the request is admitted here
/// (``EventStreamAdmission``), refused with its status and words, or handed to an
/// ``EventStream`` that serves it on the event loop — no Task per stream. Every other
/// request passes on to Hummingbird untouched.
///
/// Once a stream takes the connection over, the HTTP handlers that keep time (the idle
/// timeout, the keep-alive watch, the request deadline) go; the stream sits first in the
/// pipeline, writes its bytes straight to the connection and reads nothing more from it.
final class EventStreamRoute: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        /// Requests go to the router.
        case passing
        /// A stream's request is arriving: its head, then whatever body, then its end.
        case reading(HTTPRequest)
        /// Being decided, or answered: nothing more is read.
        case taken
    }

    private var state = State.passing
    private let server: ChatServerContext
    private let budget: ConnectionBudget
    private let logger: Logger

    init(server: ChatServerContext, budget: ConnectionBudget, logger: Logger) {
        self.server = server
        self.budget = budget
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch state {
        case .passing:
            if case .head(let head) = part, head.method == .get || head.method == .head,
                EventStreamRequest.isRoute(ChatUpgrader.splitURI(head.path ?? "").path)
            {
                state = .reading(head)
                // No longer an idle keep-alive connection the budget may close for room.
                budget.becameBusy(context.channel)
                return
            }
            context.fireChannelRead(data)
        case .reading(let head):
            if case .end = part {
                state = .taken
                // A client may have sent requests before it without waiting for their
                // answers: those come first, then the stream.
                guard let route = try? context.pipeline.syncOperations.handler(type: SendRoute.self) else { return start(head, context: context) }
                route.whenAnswered { self.start(head, context: context) }
            }
        case .taken:
            break
        }
    }

    private func start(_ head: HTTPRequest, context: ChannelHandlerContext) {
        let channel = context.channel
        // A stream's place first: the last places are kept for plain requests.
        if let full = budget.reserveSocket(channel) {
            server.refusals.record(
                "Refused an event stream", route: "/events", reason: "unavailable", client: channel.remoteAddress?.ipAddress ?? "unknown", logger: logger,
                level: .warning, metadata: ["reason": "\(full.message)"]
            )
            answer(full, context: context)
            return
        }
        EventStreamAdmission(context: server, logger: logger).decide(head, on: channel).assumeIsolated().whenComplete { result in
            switch result {
            case .success(.success(let opening)):
                self.hand(opening, headOnly: head.method == .head, context: context)
            case .success(.failure(let refused)):
                self.budget.releaseSocket(channel)
                self.answer(refused.refusal, context: context)
            case .failure(let error):
                self.budget.releaseSocket(channel)
                self.answer(Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly."), context: context)
            }
        }
    }

    /// A refusal: its status and words as plain text, then the connection closes.
    private func answer(_ refusal: Refusal, context: ChannelHandlerContext) {
        let body = ByteBuffer(string: refusal.message + "\n")
        var fields = refusal.headers
        fields[.contentType] = "text/plain; charset=utf-8"
        fields[.contentLength] = String(body.readableBytes)
        fields[.connection] = "close"
        context.write(wrapOutboundOut(.head(HTTPResponse(status: refusal.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in channel.close(promise: nil) }
    }

    /// Hands the connection to its stream.
    private func hand(_ opening: EventStream.Opening, headOnly: Bool, context: ChannelHandlerContext) {
        let channel = context.channel
        guard channel.isActive else {
            // Gone while it was admitted: give back what was taken for it.
            for subscription in opening.channels {
                if subscription.joined { server.broker.leave(subscription.name) }
                server.gatekeeper.releaseChannel(subscription.name)
            }
            return
        }
        budget.becameSocket(channel)
        let pipeline = channel.pipeline.syncOperations
        for name in [RequestDeadline.startName, RequestDeadline.endName] {
            if let handler = try? pipeline.context(name: name).handler as? any RemovableChannelHandler {
                pipeline.removeHandler(handler, promise: nil)
            }
        }
        if let idle = try? pipeline.handler(type: HTTPConnectionStateHandler.self) { pipeline.removeHandler(idle, promise: nil) }
        if let watch = try? pipeline.handler(type: ConnectionBudget.KeepAliveWatch.self) { pipeline.removeHandler(watch, promise: nil) }
        let stream = EventStream(
            opening, headOnly: headOnly, hub: server.hub.loop(for: channel.eventLoop), server: server,
            settings: EventStream.Settings(queueLimit: server.settings.socketQueueLimit, pingInterval: server.settings.eventStreamPing),
            logger: logger
        )
        do {
            try pipeline.addHandler(stream, position: .first)
        } catch {
            logger.debug("Could not start an event stream", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
            return
        }
        pipeline.removeHandler(self, promise: nil)
    }
}
