import Chat
import HTTPTypes
import Logging
import NIOCore
import NIOHTTPTypes

/// Serves `POST /send/` in the connection's pipeline, before the router: no task per
/// request, the message published with the others of its event loop's turn
/// (``PublishQueue``), the answer written from the loop.
///
/// Glue only: ``SendController`` decides what a request gets, ``SendRouteState`` the
/// order in which answers leave; everything else a connection asks goes on to the
/// router, unchanged.
final class SendRoute: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The request being read.
    private struct Reading {
        var request: Int
        var head: HTTPRequest
        var admitted: SendController.Admitted
        var body: ByteBuffer
    }

    /// A message that waits for this connection's earlier ones to be published.
    private struct Waiting {
        var request: Int
        var draft: Posting.Draft
        var admitted: SendController.Admitted
    }

    private let controller: SendController
    private let queue: PublishQueue
    private let logger: Logger
    private var state = SendRouteState()
    private var reading: Reading?
    private var peer = "unknown"
    private var date = HTTPDate()
    /// A read was asked for while reading was paused.
    private var readWanted = false
    /// This connection's messages in a batch gone to the broker or being collected, and
    /// the number of that batch.
    private var publishing = 0
    private var publishingIn: UInt64 = 0
    private var waiting: [Waiting] = []
    /// An answer that ends the connection was written: nothing more is read or answered.
    private var ending = false
    /// The request that asked for `Connection: close`.
    private var lastRequest: Int?
    /// No request after the current one is served: it asked for `Connection: close`, or
    /// is answered with an answer that ends the connection.
    private var acceptsMore = true
    /// Reading a request after that: everything is dropped.
    private var ignoring = false
    private var context: ChannelHandlerContext?

    init(controller: SendController, queue: PublishQueue, logger: Logger) {
        self.controller = controller
        self.queue = queue
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !ignoring else { return }
        let part: SendRouteState.Part
        switch unwrapInboundIn(data) {
        case .head(let head):
            // After a request that ends the connection nothing more is served: a message
            // published then could never be answered.
            guard acceptsMore else {
                ignoring = true
                return
            }
            if head.headerFields[.connection]?.lowercased() == "close" { acceptsMore = false }
            part = .head(.head(head), ours: SendController.serves(head))
        case .body(let chunk): part = .body(chunk)
        case .end(let trailers): part = .end(.end(trailers))
        }
        handle(part, context: context)
    }

    private func handle(_ part: SendRouteState.Part, context: ChannelHandlerContext) {
        guard !ending else { return }
        switch state.read(part) {
        case .forward:
            context.fireChannelRead(wrapInboundOut(part.requestPart))
        case .hold, .drop:
            break
        case .start(let request):
            guard case .head(.head(let head), _) = part else { return }
            // The client's last request: the connection ends with its answer, as the router ends it.
            if head.headerFields[.connection]?.lowercased() == "close" { lastRequest = request }
            switch controller.admit(head, peer: peer, logger: logger) {
            case .admitted(let admitted):
                reading = Reading(request: request, head: head, admitted: admitted, body: context.channel.allocator.buffer(capacity: 0))
            case .answered(let answer):
                respond(request, with: answer)
            }
        case .collect:
            guard case .body(var chunk) = part, var current = reading else { return }
            reading = nil
            guard current.body.readableBytes + chunk.readableBytes <= controller.maximumBodySize else {
                respond(current.request, with: controller.bodyTooLarge(client: current.admitted.client, cors: current.admitted.cors, logger: logger))
                return
            }
            current.body.writeBuffer(&chunk)
            reading = current
        case .serve(let request):
            guard let current = reading, current.request == request else { return }
            reading = nil
            go(on: controller.read(current.head, body: current.body, admitted: current.admitted, logger: logger), request: request, head: current.head, admitted: current.admitted)
        }
    }

    func read(context: ChannelHandlerContext) {
        if state.pausesReading {
            readWanted = true
        } else {
            context.read()
        }
    }

    // MARK: Serving

    private func go(on step: SendController.Step, request: Int, head: HTTPRequest, admitted: SendController.Admitted) {
        switch step {
        case .answer(let answer):
            respond(request, with: answer)
        case .checkSignIn(let token, let fields):
            // The one step that may wait (on the login's key set): a task, then back here.
            guard let loop = context?.eventLoop else { return }
            let (logins, controller, logger) = (controller.gatekeeper.logins, controller, logger)
            let route = NIOLoopBound(self, eventLoop: loop)
            Task {
                let outcome = await logins.check(token)
                let next = controller.signedIn(outcome, fields: fields, head: head, admitted: admitted, logger: logger)
                loop.execute { route.value.go(on: next, request: request, head: head, admitted: admitted) }
            }
        case .publish(let draft):
            publish(Waiting(request: request, draft: draft, admitted: admitted))
        }
    }

    /// Publishes now if this connection has no message in an earlier batch; else it
    /// waits for that batch's answers.
    private func publish(_ message: Waiting) {
        guard publishing == 0 || publishingIn == queue.batch else {
            waiting.append(message)
            return
        }
        publishing += 1
        publishingIn = queue.batch
        queue.submit(message.draft) { [self] result in
            publishing -= 1
            respond(message.request, with: controller.answer(result, admitted: message.admitted, logger: logger))
            if publishing == 0, !waiting.isEmpty {
                let next = waiting
                waiting = []
                for message in next { publish(message) }
            }
        }
    }

    // MARK: Writing

    private func respond(_ request: Int, with answer: SendController.Answer) {
        guard let context, !ending else { return }
        if answer.closes { acceptsMore = false }
        for ready in state.answered(request, with: request == lastRequest ? answer.closing() : answer) {
            write(ready, context: context)
            if ending { return }
        }
        context.flush()
        resume(context: context)
    }

    private func write(_ answer: SendController.Answer, context: ChannelHandlerContext) {
        var head = answer.head
        head.headerFields[.date] = date.now()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if answer.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(answer.body)), promise: nil) }
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        guard answer.closes else { return }
        // The rest of the request is not read: the connection ends once this is out.
        ending = true
        context.flush()
        // The decoder would take the end of input mid-request for a malformed request:
        // it is not one, and the answer is on its way.
        try? context.pipeline.syncOperations.handler(type: MalformedRequestAnswer.self).expectEndOfInput()
        context.close(mode: .input, promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The router's answer; once it ends, what waited for it may go on.
        let ended = if case .end = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        if ended {
            state.routerAnswered()
            guard state.holds || readWanted else { return }
            // Not from within the router's write: its reader hears of what was held next.
            context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in
                if let context = self.context { resume(context: context) }
            }
        }
    }

    /// Reads again what was held, then asks for more if reading was paused.
    private func resume(context: ChannelHandlerContext) {
        let held = state.takeHeld()
        for part in held { handle(part, context: context) }
        // The router's reader hands on what it was given at the end of a read.
        if !held.isEmpty { context.fireChannelReadComplete() }
        if readWanted, !state.pausesReading, !ending {
            readWanted = false
            context.read()
        }
    }
}

extension SendRouteState.Part {
    /// The part as the router reads it.
    var requestPart: HTTPRequestPart {
        switch self {
        case .head(let part, _), .end(let part): part
        case .body(let chunk): .body(chunk)
        }
    }
}

/// Makes each connection's ``SendRoute``, with its event loop's queue.
struct SendRoutes: Sendable {
    let controller: SendController
    let queues: PublishQueues
    let logger: Logger

    init(controller: SendController, logger: Logger) {
        self.controller = controller
        self.queues = PublishQueues(posting: controller.posting, logger: logger)
        self.logger = logger
    }

    func route(on eventLoop: any EventLoop) -> SendRoute {
        SendRoute(controller: controller, queue: queues.queue(for: eventLoop), logger: logger)
    }
}
