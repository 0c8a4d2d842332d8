import Chat
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Why a WebSocket upgrade was refused: answered as an HTTP error instead of 101.
struct UpgradeRefusal: Error, Sendable {
    var status: HTTPResponseStatus
    var message: String
}

/// The upgrade of a request to a `/wb/` socket, done the lean way.
///
/// NIO's own upgrader checks the handshake and computes `Sec-WebSocket-Accept`; this
/// one then installs only the frame decoder and a ``ChatSocket`` — no frame encoder,
/// because the hub writes frames it encoded itself.
struct ChatUpgrader: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    typealias UpgradeResult = ChatChildChannel.Outcome

    struct Request: Sendable {
        var channel: ChannelName
        var kind: FrameKind
        var resume: ChatSocket.Resume?
        /// Who the socket counts as in the room, and the name it shows.
        var member = Member(id: "", name: nil)
        /// Accepted only to be closed at once with this code and reason (a chat.v1 client
        /// refused a room: browsers cannot read an upgrade's HTTP status).
        var refusal: (code: WebSocketCloseCode, reason: String)?
        /// The test-only echo route (`--test-echo-route`): no channel, messages come back.
        var echo = false
    }

    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    private let handshake: NIOTypedWebSocketServerUpgrader<ChatChildChannel.Outcome>
    private let accepted: NIOLoopBoundBox<Request?>
    private let context: ChatServerContext
    private let logger: Logger

    /// - Parameter refusal: where to leave the reason when the upgrade is refused.
    init(channel: any Channel, context: ChatServerContext, refusal: NIOLoopBoundBox<UpgradeRefusal?>, logger: Logger) {
        let accepted = NIOLoopBoundBox<Request?>(nil, eventLoop: channel.eventLoop)
        self.accepted = accepted
        self.context = context
        self.logger = logger
        self.handshake = NIOTypedWebSocketServerUpgrader(
            maxFrameSize: context.settings.maximumMessageSize,
            enableAutomaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                Self.decide(channel: channel, head: head, context: context, logger: logger).map { decision in
                    switch decision {
                    case .success(let (request, headers)):
                        accepted.value = request
                        return headers
                    case .failure(let error):
                        refusal.value = error
                        return nil
                    }
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeFailedFuture(UpgradeRefusal(status: .internalServerError, message: "unused"))
            }
        )
    }

    func buildUpgradeResponse(
        channel: any Channel,
        upgradeRequest: HTTPRequestHead,
        initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<ChatChildChannel.Outcome> {
        channel.eventLoop.makeCompletedFuture {
            guard let request = accepted.value else {
                throw UpgradeRefusal(status: .internalServerError, message: "upgrade without a decision")
            }
            // A socket is no HTTP request: the request deadline's watches go.
            for name in [RequestDeadline.startName, RequestDeadline.endName] {
                if let handler = try? channel.pipeline.syncOperations.context(name: name).handler as? any RemovableChannelHandler {
                    channel.pipeline.syncOperations.removeHandler(handler, promise: nil)
                }
            }
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: context.settings.maximumMessageSize))
            )
            if request.kind.deflate != nil, !request.echo {
                context.encoder.countDeflateSocket(format: request.kind.format, until: channel.closeFuture)
            }
            if let refusal = request.refusal {
                try channel.pipeline.syncOperations.addHandler(RefusedSocket(code: refusal.code, reason: refusal.reason))
                return .webSocket
            }
            try channel.pipeline.syncOperations.addHandler(
                ChatSocket(
                    channelName: request.channel,
                    kind: request.kind,
                    echo: request.echo ? .init(deflateMinimumSize: context.encoder.deflateMinimumSize) : nil,
                    resume: request.resume,
                    hub: context.hub.loop(for: channel.eventLoop),
                    broker: context.broker,
                    settings: .init(
                        maximumMessageSize: context.settings.maximumMessageSize,
                        closeTimeout: .seconds(2),
                        queueLimit: context.settings.socketQueueLimit,
                        messageRate: context.gatekeeper.settings.socketMessageRate
                    ),
                    metrics: context.metrics,
                    // An inbox is no room: nobody is "online" in it.
                    presence: request.echo || RoomPolicy.owner(ofInbox: request.channel) != nil ? nil : (context.presence, request.member),
                    logger: logger
                )
            )
            return .webSocket
        }
    }

    /// Decides whether a request may become a socket, and on which channel.
    ///
    /// On success the instance has joined the channel in the broker, so the 101 is
    /// sent only once messages will flow; the join is released when the connection closes.
    private static func decide(
        channel: any Channel,
        head: HTTPRequestHead,
        context: ChatServerContext,
        logger: Logger
    ) -> EventLoopFuture<Result<(Request, HTTPHeaders), UpgradeRefusal>> {
        let eventLoop = channel.eventLoop
        let (path, query) = splitURI(head.uri)
        let echo = context.settings.echoRoute && path == "/echo"
        guard path == "/wb/" || path == "/wb" || echo else {
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(
                status: .notFound, message: "There is no WebSocket at \(path.prefix(100)); chat sockets live at /wb/"
            )))
        }
        let name = query.flatMap { FormData.value("channel", in: $0) } ?? CookieHeader.value("channel", in: head.headers["cookie"])
        let channelName: ChannelName
        do {
            channelName = try name.map { name throws(ChannelNameError) in try ChannelName(validating: name) } ?? .fallback
        } catch {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "\(error.reason)"])
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(status: .badRequest, message: "Invalid channel name: \(error.reason).")))
        }
        let offered = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        guard let format = WireFormat(offered: offered) else {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "unknown subprotocol", "offered": "\(offered)"])
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(
                status: .badRequest,
                message: "Unsupported WebSocket subprotocol; this server speaks \(WireFormat.chatV1Name), or the original raw text protocol when none is asked for."
            )))
        }
        let gatekeeper = context.gatekeeper
        let origin = head.headers.first(name: "origin")
        guard gatekeeper.allows(origin: origin) else {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "origin not allowed", "origin": "\(origin?.prefix(100) ?? "")"])
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(
                status: .forbidden, message: "Origin \(origin?.prefix(100) ?? "") may not open sockets on this server."
            )))
        }
        let token = Gatekeeper.bearerToken(head.headers.first(name: "authorization")) ?? query.flatMap { FormData.value("token", in: $0) }
        if let refusal = gatekeeper.checkConnectToken(token, channel: channelName) {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "\(refusal)", "channel": "\(channelName)"])
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(status: .unauthorized, message: refusal.description)))
        }
        let resume: ChatSocket.Resume?
        switch Self.resume(from: query) {
        case .success(let value):
            resume = format == .chatV1 ? value : nil
        case .failure(let refusal):
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "\(refusal.message)"])
            return eventLoop.makeSucceededFuture(.failure(refusal))
        }
        var headers: HTTPHeaders = format == .chatV1 ? ["Sec-WebSocket-Protocol": WireFormat.chatV1Name] : [:]
        let deflate = context.encoder.deflateEnabled ? PerMessageDeflate.negotiate(head.headers["sec-websocket-extensions"]) : nil
        if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.responseHeader) }
        if echo {
            // Conformance tests (Autobahn|Testsuite) only: the same handshake, decoder,
            // checks and extensions as /wb/, no broker.
            return eventLoop.makeSucceededFuture(.success((Request(channel: channelName, kind: FrameKind(format: .raw, deflate: deflate), resume: nil, echo: true), headers)))
        }
        let client = gatekeeper.clientAddress(peer: channel.remoteAddress, forwardedFor: head.headers["x-forwarded-for"])
        if let refusal = gatekeeper.admitSocket(from: client, on: channelName, until: channel.closeFuture) {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "\(refusal)", "client": "\(client)"])
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(status: .serviceUnavailable, message: refusal)))
        }
        // Who: the uid cookie when its signature is right, else a new identity.
        let verified = context.identities.identity(cookies: head.headers["cookie"])
        let memberID: String
        if let verified {
            memberID = verified
        } else {
            let minted = context.identities.mint()
            memberID = minted.id
            headers.add(name: "Set-Cookie", value: Identities.setCookie(minted.cookie))
        }
        // A name is only shown: an invalid one is dropped (and logged), not worth a refused socket.
        var shownName: String?
        if let given = query.flatMap({ FormData.value("name", in: $0) }) {
            if let problem = SenderName.problem(with: given) {
                logger.info("Ignored an invalid name on a WebSocket upgrade; the socket shows none", metadata: ["reason": "\(problem)", "channel": "\(channelName)"])
            } else {
                shownName = SenderName.normalized(given)
            }
        }
        var request = Request(channel: channelName, kind: FrameKind(format: format, deflate: deflate), resume: resume, member: Member(id: memberID, name: shownName))
        let metrics = context.metrics
        func refuse(_ code: WebSocketCloseCode, _ reason: String, metric: String) -> Result<(Request, HTTPHeaders), UpgradeRefusal> {
            logger.info("Refused a WebSocket upgrade", metadata: ["reason": "\(reason)", "channel": "\(channelName)"])
            guard format == .chatV1 else { return .failure(UpgradeRefusal(status: .forbidden, message: reason)) }
            metrics.refused(route: "/wb/", reason: metric)
            request.refusal = (code, reason)
            return .success((request, headers))
        }
        if let reason = RoomPolicy.refusal(for: channelName, identity: verified) {
            return eventLoop.makeSucceededFuture(refuse(.privateRoom, reason, metric: "private_room"))
        }
        let broker = context.broker
        let presence = context.presence
        let cap = context.rooms.cap(of: channelName)
        let admitted: EventLoopFuture<Bool>
        if let cap {
            admitted = eventLoop.makeFutureWithTask {
                try await broker.admit(memberID, to: channelName, instance: presence.instance, cap: cap, lifetime: presence.lifetime)
            }
        } else {
            admitted = eventLoop.makeSucceededFuture(true)
        }
        return admitted.flatMap { admitted -> EventLoopFuture<Result<(Request, HTTPHeaders), UpgradeRefusal>> in
            guard admitted else {
                let cap = cap ?? 0
                return eventLoop.makeSucceededFuture(refuse(.roomFull, "This room is full: it holds at most \(cap) \(cap == 1 ? "person" : "people").", metric: "room_full"))
            }
            channel.closeFuture.whenComplete { _ in broker.leave(channelName) }
            return broker.join(channelName, on: eventLoop).map { .success((request, headers)) }
        }
            .flatMapErrorThrowing { error in
                logger.warning("Refused a WebSocket upgrade: the broker cannot serve", metadata: ["channel": "\(channelName)", "error": "\(error)"])
                return .failure(UpgradeRefusal(status: .serviceUnavailable, message: "The chat is temporarily unavailable (\(error)); retry shortly."))
            }
    }

    /// Reads `since=OFFSET&epoch=E` from the query: both or neither.
    static func resume(from query: Substring?) -> Result<ChatSocket.Resume?, UpgradeRefusal> {
        let since = query.flatMap { FormData.value("since", in: $0) }
        let epoch = query.flatMap { FormData.value("epoch", in: $0) }
        switch (since, epoch) {
        case (nil, nil):
            return .success(nil)
        case (let since?, let epoch?):
            guard let offset = Int64(since), offset >= 0 else {
                return .failure(UpgradeRefusal(status: .badRequest, message: "since must be a whole number ≥ 0, got '\(since.prefix(40))'."))
            }
            guard (1...64).contains(epoch.utf8.count), epoch.utf8.allSatisfy({ $0 < 128 && (Character(UnicodeScalar($0)).isLetter || Character(UnicodeScalar($0)).isNumber) }) else {
                return .failure(UpgradeRefusal(status: .badRequest, message: "epoch must be 1–64 letters and digits, as the server sent it."))
            }
            return .success(ChatSocket.Resume(after: offset, epoch: epoch))
        default:
            return .failure(UpgradeRefusal(status: .badRequest, message: "To resume, give both since and epoch (from the last message you received)."))
        }
    }

    /// Splits a request target into its path and query.
    static func splitURI(_ uri: String) -> (path: Substring, query: Substring?) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri[...], nil) }
        return (uri[..<mark], uri[uri.index(after: mark)...])
    }
}
