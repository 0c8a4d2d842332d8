import Chat
import HTTPTypes
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The upgrade of a request to a `/wb/` socket, done the lean way.
///
/// NIO's own upgrader checks the handshake and computes `Sec-WebSocket-Accept`; this
/// one then installs only the frame decoder and a ``ChatSocket`` — no frame encoder,
/// because the hub writes frames it encoded itself.
struct ChatUpgrader: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    typealias UpgradeResult = ChatChildChannel.Outcome

    struct Request: Sendable {
        /// The socket's channel; for chat.v2, the one it subscribes to at once, if any.
        var channel: ChannelName?
        var subprotocol: Subprotocol
        var kind: FrameKind
        var resume: DeliveryFlow.Resume?
        /// Who the socket counts as in the room, and the name it shows.
        var member = Member(id: "", name: nil)
        /// Accepted only to be closed at once with the refusal's close code (a chat.v1
        /// client refused a room: browsers cannot read an upgrade's HTTP status).
        var refusal: Refusal?
        /// The test-only echo route (`--test-echo-route`): no channel, messages come back.
        var echo = false
        /// The client's address, for log lines.
        var client = ""
        /// The identity the `uid` cookie proved (chat.v2 checks each subscription with it).
        var verified: String?
        /// The connect token (chat.v2 checks it for each subscription's channel).
        var token: String?
        /// The person the site signed in, when the socket came with a valid JWT.
        var signIn: SignIn?
    }

    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    private let handshake: NIOTypedWebSocketServerUpgrader<ChatChildChannel.Outcome>
    private let accepted: NIOLoopBoundBox<Request?>
    private let refusal: NIOLoopBoundBox<Refusal?>
    private let context: ChatServerContext
    private let budget: ConnectionBudget
    private let logger: Logger

    /// - Parameters:
    ///   - refusal: where to leave the reason when the upgrade is refused.
    ///   - budget: told when the connection becomes a socket.
    init(channel: any Channel, context: ChatServerContext, refusal: NIOLoopBoundBox<Refusal?>, budget: ConnectionBudget, logger: Logger) {
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
                // A socket's place first: the last places are kept for plain requests.
                if let full = budget.reserveSocket(channel) {
                    context.refusals.record(
                        "Refused a WebSocket upgrade", route: "/wb/", reason: "unavailable", client: channel.remoteAddress?.ipAddress ?? "unknown",
                        logger: logger, metadata: ["reason": "\(full.message)"]
                    )
                    refusal.value = full
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                return Self.decide(channel: channel, head: head, context: context, logger: logger).map { decision in
                    switch decision {
                    case .success(let (request, headers)):
                        accepted.value = request
                        return headers
                    case .failure(let error):
                        budget.releaseSocket(channel)
                        refusal.value = error
                        return nil
                    }
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeFailedFuture(Refusal(.internalServerError, "unused"))
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
    static func handshakeProblem(_ headers: HTTPHeaders) -> Refusal? {
        let versions = headers[canonicalForm: "sec-websocket-version"]
        guard versions.count == 1, versions[0] == "13" else {
            return Refusal(
                .upgradeRequired, "This server speaks WebSocket version 13 (RFC 6455): send Sec-WebSocket-Version: 13.",
                headers: [.secWebSocketVersion: "13"]
            )
        }
        let keys = headers[canonicalForm: "sec-websocket-key"]
        guard keys.count == 1, WebSocketKey.isValid(keys[0]) else {
            return Refusal(.badRequest, "Sec-WebSocket-Key must be one base64 value of 16 random bytes (24 characters).")
        }
        return nil
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<ChatChildChannel.Outcome> {
        channel.eventLoop.makeCompletedFuture {
            guard let request = accepted.value else {
                throw Refusal(.internalServerError, "upgrade without a decision")
            }
            budget.becameSocket(channel)
            // A socket is no HTTP request: the request deadline's watches go.
            for name in [RequestDeadline.startName, RequestDeadline.endName] {
                if let handler = try? channel.pipeline.syncOperations.context(name: name).handler as? any RemovableChannelHandler {
                    channel.pipeline.syncOperations.removeHandler(handler, promise: nil)
                }
            }
            let frameLimit = request.subprotocol == .chatV2 ? context.settings.maximumChatV2FrameSize : context.settings.maximumMessageSize
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: frameLimit)))
            if request.kind.deflate != nil, !request.echo {
                context.encoder.countDeflateSocket(format: request.kind.format, until: channel.closeFuture)
            }
            if let refusal = request.refusal, let code = refusal.closeCode {
                try channel.pipeline.syncOperations.addHandler(RefusedSocket(code: code, reason: refusal.message))
                return .webSocket
            }
            try channel.pipeline.syncOperations.addHandler(socket(for: request, on: channel))
            return .webSocket
        }
    }

    /// What an upgrade request asks for, read from its head alone.
    struct Handshake: Sendable {
        /// The `channel` query field, else the `channel` cookie, else `channel_1`.
        var channel: ChannelName
        /// Whether the query named the channel (chat.v2 subscribes only to one it names).
        var named: Bool
        var subprotocol: Subprotocol
        var deflate: PerMessageDeflate.Agreement?
        var resume: DeliveryFlow.Resume?
        /// The `name` query field, unchecked.
        var name: String?
        /// `/echo` (with `--test-echo-route`) rather than `/wb/`.
        var echo: Bool
        /// The connect token, from `Authorization: Bearer` or the `token` query field.
        var token: String?
        /// The 101's own headers: the subprotocol and the extension agreed.
        var headers: HTTPHeaders
    }

    /// What becomes of an upgrade: a socket (with the 101's headers), or a refusal
    /// answered in HTTP.
    private typealias Decision = Result<(Request, HTTPHeaders), Refusal>

    /// Decides whether a request may become a socket, and on which channel.
    ///
    /// On success the instance has joined the channel in the broker, so the 101 is
    /// sent only once messages will flow; the join is released when the connection closes.
    private static func decide(
        channel: any Channel,
        head: HTTPRequestHead,
        context: ChatServerContext,
        logger: Logger
    ) -> EventLoopFuture<Decision> {
        let eventLoop = channel.eventLoop
        let gatekeeper = context.gatekeeper
        let client = gatekeeper.clientAddress(peer: channel.remoteAddress, forwardedFor: head.headers["x-forwarded-for"])
        func refused(_ refusal: Refusal, reason: String, metadata: Logger.Metadata = [:]) -> EventLoopFuture<Decision> {
            var metadata = metadata
            metadata["reason"] = "\(refusal.message)"
            context.refusals.record("Refused a WebSocket upgrade", route: "/wb/", reason: reason, client: client, logger: logger, metadata: metadata)
            return eventLoop.makeSucceededFuture(.failure(refusal))
        }
        let handshake: Handshake
        switch Self.handshake(head, context: context) {
        case .success(let read):
            handshake = read
        case .failure(let refusal):
            return refused(refusal.refusal, reason: refusal.reason, metadata: refusal.metadata)
        }
        if handshake.echo {
            // Conformance tests (Autobahn|Testsuite) only: the same handshake, decoder,
            // checks and extensions as /wb/, no broker.
            let request = Request(
                channel: handshake.channel, subprotocol: .original, kind: FrameKind(format: .raw, deflate: handshake.deflate), resume: nil, echo: true,
                client: client
            )
            return eventLoop.makeSucceededFuture(.success((request, handshake.headers)))
        }
        guard gatekeeper.mustCheckSignIn(handshake.token) else {
            return decide(handshake, signIn: nil, head: head, channel: channel, client: client, context: context, logger: logger)
        }
        return eventLoop.makeFutureWithTask { await gatekeeper.checkSignIn(handshake.token) }.flatMap { outcome in
            switch outcome {
            case .refused(let refusal):
                return eventLoop.makeSucceededFuture(refuseToken(refusal, handshake: handshake, client: client, context: context, logger: logger))
            case .anonymous, .signedIn:
                return decide(handshake, signIn: outcome.signIn, head: head, channel: channel, client: client, context: context, logger: logger)
            }
        }
    }

    /// A token that is refused: a chat.v1 or chat.v2 client hears it in the close frame
    /// (4401; browsers cannot read an upgrade's HTTP status), others get the 401.
    private static func refuseToken(_ problem: TokenRefusal, handshake: Handshake, client: String, context: ChatServerContext, logger: Logger) -> Decision {
        let refusal = Refusal(.unauthorized, problem.description, headers: [.wwwAuthenticate: #"Bearer realm="chatroom""#], closeCode: .identityRequired)
        context.refusals.record(
            "Refused a WebSocket upgrade", route: "/wb/", reason: problem.metric, client: client, logger: logger,
            metadata: ["reason": "\(refusal.message)", "channel": "\(handshake.channel)"]
        )
        guard handshake.subprotocol != .original else { return .failure(refusal) }
        var request = Request(
            channel: handshake.channel, subprotocol: handshake.subprotocol, kind: FrameKind(format: handshake.subprotocol.wireFormat, deflate: handshake.deflate),
            resume: nil, client: client
        )
        request.refusal = refusal
        return .success((request, handshake.headers))
    }

    /// The rest of ``decide(channel:head:context:logger:)``, once the person's sign-in (if any) is known.
    private static func decide(
        _ handshake: Handshake, signIn: SignIn?, head: HTTPRequestHead, channel: any Channel, client: String, context: ChatServerContext, logger: Logger
    ) -> EventLoopFuture<Decision> {
        let eventLoop = channel.eventLoop
        let gatekeeper = context.gatekeeper
        func refused(_ refusal: Refusal, reason: String) -> EventLoopFuture<Decision> {
            context.refusals.record(
                "Refused a WebSocket upgrade", route: "/wb/", reason: reason, client: client, logger: logger, metadata: ["reason": "\(refusal.message)"]
            )
            return eventLoop.makeSucceededFuture(.failure(refusal))
        }
        if handshake.subprotocol == .chatV2 {
            return eventLoop.makeSucceededFuture(openChatV2(handshake, signIn: signIn, head: head, on: channel, client: client, context: context, logger: logger))
        }
        if let refusal = gatekeeper.admitSocket(from: client, on: handshake.channel, until: channel.closeFuture) {
            return refused(refusal, reason: "unavailable")
        }
        var headers = handshake.headers
        let (memberID, verified) = identify(head, signIn: signIn, context: context, headers: &headers)
        let request = Request(
            channel: handshake.channel, subprotocol: handshake.subprotocol,
            kind: FrameKind(format: handshake.subprotocol.wireFormat, deflate: handshake.deflate), resume: handshake.resume,
            member: Member(id: memberID, name: shownName(handshake.name, signIn: signIn, channel: handshake.channel, client: client, context: context, logger: logger)),
            client: client, verified: verified, signIn: signIn
        )
        let room = RoomRefusal(request: request, headers: headers, client: client, refusals: context.refusals, logger: logger)
        if let outside = signIn?.refusal(for: handshake.channel) {
            return eventLoop.makeSucceededFuture(room.refuse(outside, metric: "forbidden"))
        }
        let admission = RoomAdmission(context: context, logger: logger)
        let ask = RoomAdmission.Ask(channel: handshake.channel, member: memberID, verified: verified, resumes: handshake.resume != nil, client: client)
        if let refused = admission.check(ask) {
            return eventLoop.makeSucceededFuture(room.refuse(refused.refusal, metric: refused.reason))
        }
        let answer = headers
        return admission.admit(ask, on: eventLoop, until: channel.closeFuture).map { admitted -> Decision in
            switch admitted {
            case .success:
                return .success((request, answer))
            case .failure(let refused) where refused.reason == "unavailable":
                // Answered in HTTP, as before chat.v2: a chat.v1 client retries the upgrade.
                return .failure(Refusal(refused.refusal.status, refused.refusal.message))
            case .failure(let refused):
                return room.refuse(refused.refusal, metric: refused.reason)
            }
        }
    }

    /// A chat.v2 socket: counted for its address now; its channels are admitted one by
    /// one as it subscribes (the socket does that, also for a channel named in the URL).
    private static func openChatV2(
        _ handshake: Handshake, signIn: SignIn?, head: HTTPRequestHead, on channel: any Channel, client: String, context: ChatServerContext, logger: Logger
    ) -> Decision {
        if let refusal = context.gatekeeper.admitSocket(from: client, until: channel.closeFuture) {
            context.refusals.record(
                "Refused a WebSocket upgrade", route: "/wb/", reason: "unavailable", client: client, logger: logger, metadata: ["reason": "\(refusal.message)"]
            )
            return .failure(refusal)
        }
        var headers = handshake.headers
        let (memberID, verified) = identify(head, signIn: signIn, context: context, headers: &headers)
        let request = Request(
            channel: handshake.named ? handshake.channel : nil, subprotocol: .chatV2,
            kind: FrameKind(format: .chatV1, deflate: handshake.deflate), resume: handshake.resume,
            member: Member(id: memberID, name: shownName(handshake.name, signIn: signIn, channel: handshake.channel, client: client, context: context, logger: logger)),
            client: client, verified: verified, token: signIn == nil ? handshake.token : nil, signIn: signIn
        )
        return .success((request, headers))
    }

    /// Reads the request's head: the path, the channel, the subprotocol, the origin, the
    /// connect token, a resume and the extensions. Nothing here needs the broker.
    static func handshake(_ head: HTTPRequestHead, context: ChatServerContext) -> Result<Handshake, HandshakeRefusal> {
        let gatekeeper = context.gatekeeper
        func refusal(_ status: HTTPResponse.Status, _ message: String, reason: String, metadata: Logger.Metadata = [:]) -> Result<Handshake, HandshakeRefusal> {
            .failure(HandshakeRefusal(refusal: Refusal(status, message), reason: reason, metadata: metadata))
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
        let named = field("channel")
        let name = named ?? CookieHeader.value("channel", in: head.headers["cookie"])
        let channelName: ChannelName
        do {
            channelName = try name.map { name throws(ChannelNameError) in try ChannelName(validating: name) } ?? .fallback
        } catch {
            return refusal(.badRequest, "Invalid channel name: \(error.reason).", reason: "bad_request")
        }
        let offered = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        guard let subprotocol = Subprotocol(offered: offered) else {
            return refusal(
                .badRequest,
                "Unsupported WebSocket subprotocol; this server speaks \(Subprotocol.chatV2) and \(Subprotocol.chatV1), or the original raw text protocol when none is asked for.",
                reason: "bad_request", metadata: ["offered": "\(String(offered.joined(separator: ",").unicodeScalars.prefix(100)))"]
            )
        }
        let origin = head.headers.first(name: "origin")
        guard gatekeeper.allows(origin: origin) else {
            return refusal(.forbidden, "Origin \(origin.map { String($0.unicodeScalars.prefix(100)) } ?? "") may not open sockets on this server.", reason: "forbidden")
        }
        let token = Gatekeeper.bearerToken(head.headers.first(name: "authorization")) ?? field("token")
        // A chat.v2 socket's token is checked again for each channel it subscribes to.
        // A JWT is checked later (its keys may need fetching); it stands for a connect token.
        let tokenChannel: ChannelName? = subprotocol == .chatV2 && named == nil ? nil : channelName
        if !gatekeeper.logins.reads(token), let problem = gatekeeper.checkConnectToken(token, channel: tokenChannel) {
            return refusal(.unauthorized, problem.description, reason: "unauthorized", metadata: ["channel": "\(channelName)"])
        }
        let resume: DeliveryFlow.Resume?
        switch Self.resume(since: field("since"), epoch: field("epoch")) {
        case .success(let value):
            resume = subprotocol == .original ? nil : value
        case .failure(let problem):
            return .failure(HandshakeRefusal(refusal: problem, reason: "bad_request"))
        }
        var headers: HTTPHeaders = subprotocol == .original ? [:] : ["Sec-WebSocket-Protocol": subprotocol.rawValue]
        let deflate = context.encoder.deflateEnabled ? PerMessageDeflate.negotiate(head.headers["sec-websocket-extensions"]) : nil
        if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.responseHeader) }
        return .success(
            Handshake(
                channel: channelName, named: named != nil, subprotocol: subprotocol, deflate: deflate, resume: resume, name: field("name"), echo: echo,
                token: token, headers: headers
            )
        )
    }

    /// A handshake's refusal with its `chatroom_refusals_total` reason and log metadata.
    struct HandshakeRefusal: Error {
        var refusal: Refusal
        var reason: String
        var metadata: Logger.Metadata = [:]
    }

    /// Who: the person the site signed in; else the uid cookie when its signature is
    /// right, else a new identity, whose cookie goes into the 101's headers. Also whether
    /// the identity was proven.
    private static func identify(
        _ head: HTTPRequestHead, signIn: SignIn?, context: ChatServerContext, headers: inout HTTPHeaders
    ) -> (id: String, verified: String?) {
        if let signIn { return (signIn.identity, signIn.identity) }
        if let verified = context.identities.identity(cookies: head.headers["cookie"]) { return (verified, verified) }
        let minted = context.identities.mint()
        headers.add(name: "Set-Cookie", value: Identities.setCookie(minted.cookie))
        headers.add(name: "Cache-Control", value: "private, no-store")
        return (minted.id, nil)
    }

    /// A name is only shown: an invalid one is dropped (and logged), not worth a refused
    /// socket. A signed-in person shows the name their token gives, whatever they ask.
    private static func shownName(
        _ given: String?, signIn: SignIn?, channel: ChannelName, client: String, context: ChatServerContext, logger: Logger
    ) -> String? {
        if let signIn { return signIn.name }
        guard let given else { return nil }
        if let problem = SenderName.problem(with: given) {
            context.refusals.record(
                "Ignored an invalid name on a WebSocket upgrade; the socket shows none", route: "/wb/", reason: "bad_name", client: client,
                logger: logger, metadata: ["reason": "\(problem)", "channel": "\(channel)"]
            )
            return nil
        }
        return SenderName.normalized(given)
    }

    /// A room's refusal: a chat.v1 client hears it in the close frame (browsers cannot
    /// read an upgrade's HTTP status); others get its HTTP status.
    private struct RoomRefusal: Sendable {
        let request: Request
        let headers: HTTPHeaders
        let client: String
        let refusals: Refusals
        let logger: Logger

        func refuse(_ refusal: Refusal, metric: String) -> Decision {
            refusals.record(
                "Refused a WebSocket upgrade", route: "/wb/", reason: metric, client: client, logger: logger,
                metadata: ["reason": "\(refusal.message)", "channel": "\(request.channel.map(\.rawValue) ?? "")"]
            )
            guard request.subprotocol == .chatV1, refusal.closeCode != nil else { return .failure(refusal) }
            var refused = request
            refused.refusal = refusal
            return .success((refused, headers))
        }
    }

    /// The handler that serves an accepted socket: a ``ChatSocket``, or on the echo
    /// route an ``EchoSocket``.
    private func socket(for request: Request, on channel: any Channel) -> any ChannelHandler {
        let settings = ChatSocket.Settings(
            maximumMessageSize: context.settings.maximumMessageSize,
            closeTimeout: .seconds(2),
            queueLimit: context.settings.socketQueueLimit,
            messageRate: context.gatekeeper.settings.socketMessageRate
        )
        if request.echo {
            return EchoSocket(
                deflate: request.kind.deflate, deflateMinimumSize: context.encoder.deflateMinimumSize,
                settings: WebSocketEndpointSettings(
                    maximumMessageSize: settings.maximumMessageSize, closeTimeout: settings.closeTimeout, messageRate: settings.messageRate,
                    refusals: context.refusals, client: request.client, logger: logger
                )
            )
        }
        if request.subprotocol == .chatV2 {
            var rate = settings.messageRate
            // A page subscribes to all its rooms as it opens.
            rate?.burst += Double(context.settings.maximumSubscriptions)
            return ChatV2Socket(
                first: request.channel.map { ($0, request.resume) },
                person: ChatV2Socket.Person(
                    member: request.member, verified: request.verified, token: request.token,
                    moderator: request.verified.map(context.settings.moderators.contains) == true
                ),
                lease: request.signIn.map { SignInLease($0, logins: context.gatekeeper.logins) },
                kind: request.kind,
                hub: context.hub.loop(for: channel.eventLoop),
                server: context,
                settings: ChatV2Socket.Settings(
                    maximumMessageSize: context.settings.maximumMessageSize, maximumFrameSize: context.settings.maximumChatV2FrameSize,
                    closeTimeout: settings.closeTimeout, queueLimit: settings.queueLimit, messageRate: rate,
                    maximumSubscriptions: context.settings.maximumSubscriptions
                ),
                client: request.client,
                logger: logger
            )
        }
        guard let channelName = request.channel else { preconditionFailure("a chat.v1 or original socket without its channel") }
        return ChatSocket(
            channelName: channelName,
            kind: request.kind,
            resume: request.resume,
            hub: context.hub.loop(for: channel.eventLoop),
            broker: context.broker,
            reads: context.reads,
            settings: settings,
            metrics: context.metrics,
            refusals: context.refusals,
            client: request.client,
            // An inbox is no room: nobody is "online" in it.
            presence: RoomPolicy.owner(ofInbox: channelName) != nil ? nil : (context.presence, request.member),
            identity: request.member.id,
            lease: request.signIn.map { SignInLease($0, logins: context.gatekeeper.logins) },
            logger: logger
        )
    }

    /// Reads `since=OFFSET&epoch=E` from the query: both or neither.
    static func resume(since: String?, epoch: String?) -> Result<DeliveryFlow.Resume?, Refusal> {
        switch (since, epoch) {
        case (nil, nil):
            return .success(nil)
        case (let since?, let epoch?):
            guard let offset = Offset.parse(since) else {
                return .failure(Refusal(.badRequest, "since must be a whole number from 0 to \(Offset.maximum), got '\(String(since.unicodeScalars.prefix(40)))'."))
            }
            guard (1...64).contains(epoch.utf8.count), epoch.utf8.allSatisfy({ $0 < 128 && (Character(UnicodeScalar($0)).isLetter || Character(UnicodeScalar($0)).isNumber) }) else {
                return .failure(Refusal(.badRequest, "epoch must be 1–64 letters and digits, as the server sent it."))
            }
            return .success(DeliveryFlow.Resume(after: offset, epoch: epoch))
        default:
            return .failure(Refusal(.badRequest, "To resume, give both since and epoch (from the last message you received)."))
        }
    }

    /// Splits a request target into its path and query.
    static func splitURI(_ uri: String) -> (path: Substring, query: Substring?) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri[...], nil) }
        return (uri[..<mark], uri[uri.index(after: mark)...])
    }
}
