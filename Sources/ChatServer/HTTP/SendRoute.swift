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
///
/// What it owes a client beyond that: every request read before the client ended its
/// input is answered (the end of input waits for the answers); the requests of one
/// connection are published in the order they came (one after the other through the
/// steps that may wait); nothing after an answer that ends the connection is served; and
/// a client that does not read its answers is not read from either.
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

    /// A request read whole, and the step it has reached.
    private struct Served {
        var request: Int
        var step: SendController.Step
        var head: HTTPRequest
        var admitted: SendController.Admitted
    }

    private let controller: SendController
    private let queue: PublishQueue
    private let logger: Logger
    private var state = SendRouteState()
    private var reading: Reading?
    /// Requests read whole whose step is not taken yet, in order: one that waits (a
    /// sign-in check) holds up the ones after it, so they publish in the order they came.
    private var served: CircularBuffer<Served> = []
    private var checkingSignIn = false
    private var peer = "unknown"
    private var date = HTTPDate()
    /// A read was asked for while reading was paused.
    private var readWanted = false
    /// This connection's messages in a batch gone to the broker or being collected, and
    /// the number of that batch.
    private var publishing = 0
    private var publishingIn: UInt64 = 0
    /// Messages that wait for the batch of this connection's earlier ones to be answered.
    private var unsubmitted: [Served] = []
    /// An answer that ends the connection was written: nothing more is read or answered.
    private var ending = false
    /// The request that asked for `Connection: close`.
    private var lastRequest: Int?
    /// An answer that ends the connection was decided: no later request is served.
    private var closing = false
    /// A request after that began: it and everything after it are dropped.
    private var droppingRest = false
    /// A request read asked for `Connection: close`: its answer ends the connection.
    private var closeAsked = false
    /// The client ended its input: the router hears of it once the answers are out.
    private var inputEnded = false
    /// What waits for the answers to be out (a parse error's answer).
    private var afterAnswers: [() -> Void] = []
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

    /// Whether the route has answers to give or requests held.
    private var isBusy: Bool { state.isServing || state.holds }

    /// Runs `body` once every answer owed is written, the route's and the router's (at
    /// once if none is); never, if an answer that ends the connection comes first.
    func whenAnswered(_ body: @escaping () -> Void) {
        // A request asked to end the connection: its answer does, and nothing follows it.
        guard !ending, !closeAsked else { return }
        guard isBusy || state.routerIsAnswering else { return body() }
        afterAnswers.append(body)
    }

    /// The input broke off inside a request the router is reading (`error`, the parser's):
    /// the router's request fails with it instead of ending, so that its route never acts
    /// on a body cut short (Hummingbird takes an input that stops for the body's end).
    /// Whether there was such a request.
    @discardableResult
    func cutRouterRequestShort(_ error: any Error) -> Bool {
        guard state.routerIsReadingARequest, let context else { return false }
        context.fireErrorCaught(error)
        return true
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part: SendRouteState.Part
        switch unwrapInboundIn(data) {
        case .head(let head):
            if Self.asksToClose(head) { closeAsked = true }
            part = .head(.head(head), ours: SendController.serves(head))
        case .body(let chunk): part = .body(chunk)
        case .end(let trailers): part = .end(.end(trailers))
        }
        handle(part, context: context)
    }

    private func handle(_ part: SendRouteState.Part, context: ChannelHandlerContext) {
        guard !ending else { return }
        // After an answer that ends the connection nothing more is served (a message
        // published then could never be answered), nor given to the router: no part of
        // a request after it goes anywhere.
        if closing, case .head = part { droppingRest = true }
        guard !droppingRest else { return }
        switch state.read(part) {
        case .forward:
            context.fireChannelRead(wrapInboundOut(part.requestPart))
        case .hold, .drop:
            break
        case .start(let request):
            guard case .head(.head(let head), _) = part else { return }
            // The client's last request: the connection ends with its answer, as the router ends it.
            if Self.asksToClose(head) { lastRequest = request }
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
            let step = controller.read(current.head, body: current.body, admitted: current.admitted, logger: logger)
            served.append(Served(request: request, step: step, head: current.head, admitted: current.admitted))
            takeSteps()
        }
    }

    /// `Connection: close`, alone or among other tokens.
    private static func asksToClose(_ head: HTTPRequest) -> Bool {
        head.headerFields[values: .connection].contains { value in
            value.split(separator: ",").contains { $0.trimmingSpaces.lowercased() == "close" }
        }
    }

    func read(context: ChannelHandlerContext) {
        // A client that does not read its answers is not read from: what waits stays bounded.
        if state.pausesReading || !context.channel.isWritable {
            readWanted = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { resume(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The end of the client's input ends the router's reading, and with it the
        // connection: not before the answers owed are out.
        if case .inputClosed = event as? ChannelEvent, isBusy {
            inputEnded = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Serving

    /// Takes the served requests' steps in order, until one has to wait.
    private func takeSteps() {
        while !checkingSignIn, let next = served.popFirst() {
            switch next.step {
            case .answer(let answer):
                respond(next.request, with: answer)
            case .publish(let draft):
                publish(Served(request: next.request, step: .publish(draft), head: next.head, admitted: next.admitted), draft: draft)
            case .checkSignIn(let token, let fields):
                // The one step that may wait (on the login's key set): a task, then back
                // here; the requests after it wait their turn.
                guard let loop = context?.eventLoop else { return }
                checkingSignIn = true
                let (logins, controller, logger) = (controller.gatekeeper.logins, controller, logger)
                let route = NIOLoopBound(self, eventLoop: loop)
                let (head, admitted) = (next.head, next.admitted)
                Task {
                    let outcome = await logins.check(token)
                    let step = controller.signedIn(outcome, fields: fields, head: head, admitted: admitted, logger: logger)
                    loop.execute {
                        let route = route.value
                        route.checkingSignIn = false
                        route.served.prepend(Served(request: next.request, step: step, head: head, admitted: admitted))
                        route.takeSteps()
                    }
                }
            }
        }
    }

    /// Publishes now if this connection has no message in an earlier batch; else it
    /// waits for that batch's answers.
    private func publish(_ message: Served, draft: Posting.Draft) {
        guard unsubmitted.isEmpty, publishing == 0 || publishingIn == queue.batch else {
            unsubmitted.append(message)
            return
        }
        publishing += 1
        publishingIn = queue.batch
        queue.submit(draft) { [self] result in
            publishing -= 1
            respond(message.request, with: controller.answer(result, admitted: message.admitted, logger: logger))
            guard publishing == 0, !unsubmitted.isEmpty else { return }
            let next = unsubmitted
            unsubmitted = []
            for message in next {
                if case .publish(let draft) = message.step { publish(message, draft: draft) }
            }
        }
    }

    // MARK: Writing

    private func respond(_ request: Int, with answer: SendController.Answer) {
        guard let context, !ending else { return }
        let answer = request == lastRequest ? answer.closing() : answer
        if answer.closes { closing = true }
        for ready in state.answered(request, with: answer) {
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
        // Nothing is written after it (a malformed request's answer waited for it).
        afterAnswers = []
        if inputEnded { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The router's answer; once it ends, what waited for it may go on.
        let ended = if case .end = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        if ended {
            state.routerAnswered()
            guard state.holds || readWanted || inputEnded || !afterAnswers.isEmpty else { return }
            // Not from within the router's write: its reader hears of what was held next.
            context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in
                if let context = self.context { resume(context: context) }
            }
        }
    }

    /// Reads again what was held, then asks for more if reading was paused; once nothing
    /// is owed, tells the router of the end of input and runs what waited.
    private func resume(context: ChannelHandlerContext) {
        let held = state.takeHeld()
        for part in held { handle(part, context: context) }
        // The router's reader hands on what it was given at the end of a read.
        if !held.isEmpty { context.fireChannelReadComplete() }
        guard !isBusy, !state.routerIsAnswering || afterAnswers.isEmpty, !ending else {
            if readWanted, !state.pausesReading, context.channel.isWritable, !ending {
                readWanted = false
                context.read()
            }
            return
        }
        runAfterAnswers()
        if inputEnded {
            inputEnded = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            return
        }
        if readWanted, context.channel.isWritable {
            readWanted = false
            context.read()
        }
    }

    private func runAfterAnswers() {
        let waiting = afterAnswers
        afterAnswers = []
        for body in waiting { body() }
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
