import Chat
import HTTPTypes
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// One port for all: HTTP requests go to Hummingbird's router, `/wb/` upgrades go to
/// a lean SwiftNIO pipeline (``ChatSocket``) with no Task per socket, and `POST /send/`
/// is served in the pipeline before the router (``SendRoute``).
///
/// Modelled on hummingbird-websocket's `HTTP1WebSocketUpgradeChannel`, with its
/// async per-socket handler replaced by ``ChatUpgrader``.
struct ChatChildChannel: ServerChildChannel, HTTPChannelHandler {
    /// What became of a new connection.
    enum Outcome: Sendable {
        /// A `/wb/` socket, now served by the NIO pipeline alone.
        case webSocket
        /// Plain HTTP for the router.
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A WebSocket upgrade that was refused: answer with the refusal and close.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, Refusal)
        /// Over the connection budget: answered 503 and closed in the pipeline.
        case overCapacity
    }

    struct Value: ServerChildChannelValue {
        let outcome: EventLoopFuture<Outcome>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let context: ChatServerContext
    let sends: SendRoutes
    let idleTimeout: Duration?
    let budget: ConnectionBudget
    let logger: Logger

    init(
        responder: @escaping HTTPChannelHandler.Responder,
        context: ChatServerContext,
        sends: SendRoutes,
        idleTimeout: Duration?,
        budget: ConnectionBudget,
        logger: Logger
    ) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.context = context
        self.sends = sends
        self.idleTimeout = idleTimeout
        self.budget = budget
        self.logger = logger
    }

    /// Numbers connections for the logs.
    private static let connectionNumbers = NIOLockedValueBox<UInt64>(0)

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        if self.logger.logLevel <= .debug {
            let id = Self.connectionNumbers.withLockedValue { value -> UInt64 in
                value += 1
                return value
            }
            let peer = channel.remoteAddress?.description ?? "?"
            let logger = self.logger
            logger.debug("Connection open", metadata: ["connection": "\(id)", "peer": "\(peer)"])
            channel.closeFuture.whenComplete { _ in logger.debug("Connection closed", metadata: ["connection": "\(id)", "peer": "\(peer)"]) }
        }
        let admission = budget.admit(channel)
        guard admission == .admitted else {
            context.metrics.refused(route: "connection", reason: admission == .full ? "over_capacity" : "address_connections")
            try? channel.pipeline.syncOperations.addHandler(ConnectionBudget.Refusal(admission, budget: budget))
            return channel.eventLoop.makeSucceededFuture(Value(outcome: channel.eventLoop.makeSucceededFuture(.overCapacity), channel: channel))
        }
        return channel.eventLoop.makeCompletedFuture {
            // NIO keeps each connection's receive buffer for the next read; its default
            // first size, 2 KB, was a third of an idle socket's memory. Requests and
            // client frames are small: start at 512 bytes, growing for larger reads.
            try channel.syncOptions?.setOption(.recvAllocator, value: Self.receiveBuffers)
            let refusal = NIOLoopBoundBox<Refusal?>(nil, eventLoop: channel.eventLoop)
            let upgrader = ChatUpgrader(channel: channel, context: context, refusal: refusal, budget: budget, logger: self.logger)
            let idleTimeout = self.idleTimeout
            let budget = self.budget
            let sends = self.sends
            let connectionLogger = self.logger
            let upgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration<Outcome>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(EventStreamRoute(server: context, budget: budget, logger: connectionLogger))
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: connectionLogger)
                        )
                        try channel.pipeline.syncOperations.addHandler(ConnectionBudget.KeepAliveWatch(budget: budget))
                        try channel.pipeline.syncOperations.addHandler(sends.route(on: channel.eventLoop))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        if let refused = refusal.value { return .refused(http, refused) }
                        return .http(http)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Outcome>(upgradeConfiguration: upgradeConfiguration)
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let outcome = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // Slow clients: the request's head and body must arrive within the deadline.
            let deadline = RequestDeadline(timeout: TimeAmount(context.settings.requestTimeout), refusals: context.refusals, logger: self.logger)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<Outcome>.self)
            try channel.pipeline.syncOperations.addHandler(RequestDeadline.EndWatch(deadline), name: RequestDeadline.endName, position: .before(upgradeHandler))
            // A request NIO cannot parse is answered at once (400, or 431 for a head too large), then closed.
            try channel.pipeline.syncOperations.addHandler(
                MalformedRequestAnswer(refusals: context.refusals, logger: self.logger), position: .before(upgradeHandler)
            )
            try channel.pipeline.syncOperations.addHandler(RequestDeadline.StartWatch(deadline), name: RequestDeadline.startName, position: .first)
            return Value(outcome: outcome, channel: channel)
        }
    }

    /// Receive buffers: 512 bytes at first, adapting between 64 bytes and 64 KB.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.outcome.get() {
            case .webSocket, .overCapacity:
                return  // the socket lives on in its NIO pipeline, or is being closed
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let refusal):
                await refuse(http, refusal)
            }
        } catch {
            logger.debug("Connection ended before it was set up", metadata: ["error": "\(error)"])
        }
    }

    /// Answers a refused upgrade with its status and a message a person can read.
    private func refuse(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, _ refusal: Refusal) async {
        // Counted and logged where it was decided.
        let body = ByteBuffer(string: refusal.message + "\n")
        var head = HTTPResponse(status: refusal.status, headerFields: refusal.headers)
        head.headerFields[.connection] = "close"
        head.headerFields[.contentType] = "text/plain; charset=utf-8"
        head.headerFields[.contentLength] = String(body.readableBytes)
        try? await http.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(head), .body(body), .end(nil)])
        }
    }

    /// NIO can upgrade only the first request of a connection; a later request asking
    /// for a WebSocket is redirected to the same URL on a new connection.
    ///
    /// The `Location` is the socket's own path, never the request's target: a target
    /// like `//evil.example/x` would otherwise make it an open redirect.
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectedUpgrade: Error {}
        return { request, writer, channel in
            if request.headers[.upgrade]?.lowercased() == "websocket" {
                guard let location = lateUpgradeLocation(path: request.uri.path, query: request.uri.query) else {
                    let body = ByteBuffer(string: "There is no WebSocket here; chat sockets live at /wb/\n")
                    try await writer.write(
                        response: HTTPResponse(
                            status: .notFound,
                            headerFields: [.connection: "close", .contentType: "text/plain; charset=utf-8", .contentLength: String(body.readableBytes)]
                        ),
                        body: .init(byteBuffer: body)
                    )
                    throw RedirectedUpgrade()
                }
                try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location, .contentLength: "0"]))
                throw RedirectedUpgrade()
            }
            try await responder(request, writer, channel)
        }
    }

    /// Where a late upgrade is sent: `/wb/` with the query, or `nil` for any other path.
    static func lateUpgradeLocation(path: String, query: String?) -> String? {
        guard path == "/wb/" || path == "/wb" else { return nil }
        return "/wb/" + (query.map { "?" + $0 } ?? "")
    }
}
