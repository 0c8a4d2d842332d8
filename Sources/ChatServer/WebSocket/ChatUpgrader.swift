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
    /// Headers the refusal carries, e.g. `Sec-WebSocket-Version` with a 426.
    var headers: [(name: String, value: String)] = []
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
        /// The client's address, for log lines.
        var client = ""
    }

    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    private let handshake: NIOTypedWebSocketServerUpgrader<ChatChildChannel.Outcome>
    private let accepted: NIOLoopBoundBox<Request?>
    private let refusal: NIOLoopBoundBox<UpgradeRefusal?>
    private let context: ChatServerContext
    private let budget: ConnectionBudget
    private let logger: Logger

    /// - Parameters:
    ///   - refusal: where to leave the reason when the upgrade is refused.
    ///   - budget: told when the connection becomes a socket.
    init(channel: any Channel, context: ChatServerContext, refusal: NIOLoopBoundBox<UpgradeRefusal?>, budget: ConnectionBudget, logger: Logger) {
        let accepted = NIOLoopBoundBox<Request?>(nil, eventLoop: channel.eventLoop)
        self.accepted = accepted
        self.refusal = refusal
        self.context = context
        self.budget = budget
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
        // RFC 6455 §4.2.1: the key and the version first, with answers a client can read
        // (NIO's own checks end the connection without one).
        if let problem = Self.handshakeProblem(upgradeRequest.headers) {
            context.refusals.record(
                "Refused a WebSocket upgrade", route: "/wb/", reason: "bad_handshake",
                client: channel.remoteAddress?.ipAddress ?? "unknown", logger: logger, metadata: ["reason": "\(problem.message)"]
            )
            refusal.value = problem
            return channel.eventLoop.makeFailedFuture(problem)
        }
        return handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    /// What is wrong with an upgrade's `Sec-WebSocket-Key` and `Sec-WebSocket-Version`:
    /// `400` for a key that is not base64 of 16 bytes, `426` with the version this server
    /// speaks for any other version.
    static func handshakeProblem(_ headers: HTTPHeaders) -> UpgradeRefusal? {
        let versions = headers[canonicalForm: "sec-websocket-version"]
        guard versions.count == 1, versions[0] == "13" else {
            return UpgradeRefusal(
                status: .upgradeRequired, message: "This server speaks WebSocket version 13 (RFC 6455): send Sec-WebSocket-Version: 13.",
                headers: [("Sec-WebSocket-Version", "13")]
            )
        }
        let keys = headers[canonicalForm: "sec-websocket-key"]
        guard keys.count == 1, WebSocketKey.isValid(keys[0]) else {
            return UpgradeRefusal(status: .badRequest, message: "Sec-WebSocket-Key must be one base64 value of 16 random bytes (24 characters).")
        }
        return nil
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<ChatChildChannel.Outcome> {
        channel.eventLoop.makeCompletedFuture {
            guard let request = accepted.value else {
                throw UpgradeRefusal(status: .internalServerError, message: "upgrade without a decision")
            }
            budget.becameSocket(channel)
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
                    refusals: context.refusals,
                    client: request.client,
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
        let gatekeeper = context.gatekeeper
        let client = gatekeeper.clientAddress(peer: channel.remoteAddress, forwardedFor: head.headers["x-forwarded-for"])
        func refusal(_ status: HTTPResponseStatus, _ message: String, reason: String, metadata: Logger.Metadata = [:]) -> EventLoopFuture<Result<(Request, HTTPHeaders), UpgradeRefusal>> {
            var metadata = metadata
            metadata["reason"] = "\(message)"
            context.refusals.record("Refused a WebSocket upgrade", route: "/wb/", reason: reason, client: client, logger: logger, metadata: metadata)
            return eventLoop.makeSucceededFuture(.failure(UpgradeRefusal(status: status, message: message)))
        }
        let (path, rawQuery) = splitURI(head.uri)
        let echo = context.settings.echoRoute && path == "/echo"
        guard path == "/wb/" || path == "/wb" || echo else {
            return refusal(.notFound, "There is no WebSocket at \(String(path.unicodeScalars.prefix(100))); chat sockets live at /wb/", reason: "not_found")
        }
        let query: [(name: String, value: String)]
        do {
            query = try rawQuery.map { query throws(FormError) in try FormData.pairs(query) } ?? []
        } catch {
            return refusal(.badRequest, error.message, reason: "bad_request")
        }
        func field(_ name: String) -> String? { query.last { $0.name == name }?.value }
        let name = field("channel") ?? CookieHeader.value("channel", in: head.headers["cookie"])
        let channelName: ChannelName
        do {
            channelName = try name.map { name throws(ChannelNameError) in try ChannelName(validating: name) } ?? .fallback
        } catch {
            return refusal(.badRequest, "Invalid channel name: \(error.reason).", reason: "bad_request")
        }
        let offered = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        guard let format = WireFormat(offered: offered) else {
            return refusal(
                .badRequest,
                "Unsupported WebSocket subprotocol; this server speaks \(WireFormat.chatV1Name), or the original raw text protocol when none is asked for.",
                reason: "bad_request", metadata: ["offered": "\(String(offered.joined(separator: ",").unicodeScalars.prefix(100)))"]
            )
        }
        let origin = head.headers.first(name: "origin")
        guard gatekeeper.allows(origin: origin) else {
            return refusal(.forbidden, "Origin \(origin.map { String($0.unicodeScalars.prefix(100)) } ?? "") may not open sockets on this server.", reason: "forbidden")
        }
        let token = Gatekeeper.bearerToken(head.headers.first(name: "authorization")) ?? field("token")
        if let problem = gatekeeper.checkConnectToken(token, channel: channelName) {
            return refusal(.unauthorized, problem.description, reason: "unauthorized", metadata: ["channel": "\(channelName)"])
        }
        let resume: ChatSocket.Resume?
        switch Self.resume(since: field("since"), epoch: field("epoch")) {
        case .success(let value):
            resume = format == .chatV1 ? value : nil
        case .failure(let problem):
            return refusal(problem.status, problem.message, reason: "bad_request")
        }
        var headers: HTTPHeaders = format == .chatV1 ? ["Sec-WebSocket-Protocol": WireFormat.chatV1Name] : [:]
        let deflate = context.encoder.deflateEnabled ? PerMessageDeflate.negotiate(head.headers["sec-websocket-extensions"]) : nil
        if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.responseHeader) }
        if echo {
            // Conformance tests (Autobahn|Testsuite) only: the same handshake, decoder,
            // checks and extensions as /wb/, no broker.
            return eventLoop.makeSucceededFuture(.success((Request(channel: channelName, kind: FrameKind(format: .raw, deflate: deflate), resume: nil, echo: true, client: client), headers)))
        }
        if let problem = gatekeeper.admitSocket(from: client, on: channelName, until: channel.closeFuture) {
            return refusal(.serviceUnavailable, problem, reason: "unavailable")
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
            headers.add(name: "Cache-Control", value: "private, no-store")
        }
        // A name is only shown: an invalid one is dropped (and logged), not worth a refused socket.
        var shownName: String?
        if let given = field("name") {
            if let problem = SenderName.problem(with: given) {
                context.refusals.record(
                    "Ignored an invalid name on a WebSocket upgrade; the socket shows none", route: "/wb/", reason: "bad_name", client: client,
                    logger: logger, metadata: ["reason": "\(problem)", "channel": "\(channelName)"]
                )
            } else {
                shownName = SenderName.normalized(given)
            }
        }
        var request = Request(
            channel: channelName, kind: FrameKind(format: format, deflate: deflate), resume: resume, member: Member(id: memberID, name: shownName), client: client
        )
        /// A room's refusal: a chat.v1 client hears it in the close frame (browsers
        /// cannot read an upgrade's HTTP status); others get `403`.
        func refuse(_ code: WebSocketCloseCode, _ reason: String, metric: String) -> Result<(Request, HTTPHeaders), UpgradeRefusal> {
            context.refusals.record(
                "Refused a WebSocket upgrade", route: "/wb/", reason: metric, client: client, logger: logger,
                metadata: ["reason": "\(reason)", "channel": "\(channelName)"]
            )
            guard format == .chatV1 else {
                return .failure(UpgradeRefusal(status: code == .tooManyRequests ? .tooManyRequests : .forbidden, message: reason))
            }
            request.refusal = (code, reason)
            return .success((request, headers))
        }
        if let reason = RoomPolicy.refusal(for: channelName, identity: verified) {
            return eventLoop.makeSucceededFuture(refuse(.privateRoom, reason, metric: "private_room"))
        }
        // A resume reads the history: it takes a read from the address's allowance, as
        // `/history` does.
        if resume != nil, let wait = gatekeeper.takeHistoryRead(from: client) {
            let tooMany = Gatekeeper.tooMany("history reads", rate: gatekeeper.settings.historyRate, wait: wait)
            return eventLoop.makeSucceededFuture(refuse(.tooManyRequests, tooMany.message, metric: "rate_limited"))
        }
        let broker = context.broker
        let presence = context.presence
        let cap = context.rooms.cap(of: channelName)
        let admitted: EventLoopFuture<Bool>
        if let cap {
            // A place in a capped room is a person's: a client without an identity would
            // be a new person each time, and could fill the room alone.
            guard verified != nil else {
                return eventLoop.makeSucceededFuture(refuse(
                    .identityRequired,
                    "This room holds a limited number of people, so it needs to know who you are: open the chat page first (it gives your browser an identity), then connect again.",
                    metric: "identity_required"
                ))
            }
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
                context.refusals.record(
                    "Refused a WebSocket upgrade: the broker cannot serve", route: "/wb/", reason: "unavailable", client: client, logger: logger,
                    level: .warning, metadata: ["channel": "\(channelName)", "error": "\(error)"]
                )
                return .failure(UpgradeRefusal(status: .serviceUnavailable, message: "The chat is temporarily unavailable (\(error)); retry shortly."))
            }
    }

    /// Reads `since=OFFSET&epoch=E` from the query: both or neither.
    static func resume(since: String?, epoch: String?) -> Result<ChatSocket.Resume?, UpgradeRefusal> {
        switch (since, epoch) {
        case (nil, nil):
            return .success(nil)
        case (let since?, let epoch?):
            guard let offset = Offset.parse(since) else {
                return .failure(UpgradeRefusal(status: .badRequest, message: "since must be a whole number from 0 to \(Offset.maximum), got '\(String(since.unicodeScalars.prefix(40)))'."))
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
