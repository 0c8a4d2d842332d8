import Chat
import HTTPTypes
import Logging
import NIOCore

/// Whether a `GET /events` request may become a stream: the rules a chat.v2 socket and
/// each of its subscriptions go through (origin, sign-in, connect token, the address's
/// socket limit, and for every channel the room's rules, its place and the broker's join),
/// all decided before the answer's head, so that each refusal is an HTTP status with the
/// words `/history` uses. A refusal for one channel refuses the request: what was taken
/// for the others is given back.
struct EventStreamAdmission: Sendable {
    /// A refusal with the reason counted in `chatroom_refusals_total`.
    struct Refused: Error, Sendable {
        var refusal: Refusal
        var reason: String
    }

    typealias Decision = Result<EventStream.Opening, Refused>

    let context: ChatServerContext
    let logger: Logger

    /// Decides on the request whose head is `head`, arrived on `channel`.
    func decide(_ head: HTTPRequest, on channel: any Channel) -> EventLoopFuture<Decision> {
        let eventLoop = channel.eventLoop
        let gatekeeper = context.gatekeeper
        let client = gatekeeper.clientAddress(peer: channel.remoteAddress, forwardedFor: head.headerFields[values: .xForwardedFor])
        let cors = gatekeeper.corsHeaders(origin: head.headerFields[.origin])
        let (_, query) = ChatUpgrader.splitURI(head.path ?? "")
        let request: EventStreamRequest
        switch EventStreamRequest.read(
            query: query, lastEventID: head.headerFields[.lastEventID], authorization: head.headerFields[.authorization],
            maximumChannels: context.settings.maximumSubscriptions
        ) {
        case .success(let read):
            request = read
        case .failure(let refusal):
            return eventLoop.makeSucceededFuture(refuse(refusal, reason: "bad_request", client: client, cors: cors))
        }
        let origin = head.headerFields[.origin]
        guard gatekeeper.allows(origin: origin) else {
            let shown = origin.map { String($0.unicodeScalars.prefix(100)) } ?? ""
            return eventLoop.makeSucceededFuture(refuse(Refusal(.forbidden, "Origin \(shown) may not open streams on this server."), reason: "forbidden", client: client, cors: cors))
        }
        let ask = Ask(request: request, cookies: head.headerFields[values: .cookie], client: client, cors: cors)
        guard gatekeeper.mustCheckSignIn(request.token) else {
            return admit(ask, signIn: nil, on: channel)
        }
        return eventLoop.makeFutureWithTask { await gatekeeper.checkSignIn(request.token) }.flatMap { outcome in
            switch outcome {
            case .refused(let problem):
                let refusal = Refusal(.unauthorized, problem.description, headers: [.wwwAuthenticate: #"Bearer realm="chatroom""#])
                return eventLoop.makeSucceededFuture(refuse(refusal, reason: problem.metric, client: client, cors: cors))
            case .anonymous, .signedIn:
                return admit(ask, signIn: outcome.signIn, on: channel)
            }
        }
    }

    /// What the request asks, read, with what its answer needs.
    private struct Ask: Sendable {
        var request: EventStreamRequest
        var cookies: [String]
        var client: String
        var cors: HTTPFields
    }

    /// The rest of ``decide(_:on:)``, once the person's sign-in (if any) is known.
    private func admit(_ ask: Ask, signIn: SignIn?, on channel: any Channel) -> EventLoopFuture<Decision> {
        let eventLoop = channel.eventLoop
        let gatekeeper = context.gatekeeper
        let request = ask.request
        func refused(_ refusal: Refusal, reason: String) -> EventLoopFuture<Decision> {
            eventLoop.makeSucceededFuture(refuse(refusal, reason: reason, client: ask.client, cors: ask.cors))
        }
        var names: [ChannelName] = []
        for requested in request.channels {
            let name: ChannelName
            do {
                name = try ChannelName(validating: requested)
            } catch {
                return refused(Refusal(.badRequest, "Invalid channel name: \(error.reason)."), reason: "bad_request")
            }
            if let signIn {
                if let outside = signIn.refusal(for: name) { return refused(outside, reason: "forbidden") }
            } else if let problem = gatekeeper.checkConnectToken(request.token, channel: name) {
                var refusal = Refusal(.unauthorized, problem.description)
                refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""#
                return refused(refusal, reason: "unauthorized")
            }
            names.append(name)
        }
        if let refusal = gatekeeper.admitSocket(from: ask.client, until: channel.closeFuture) {
            return refused(refusal, reason: "unavailable")
        }
        var headers = ask.cors
        let person = self.person(ask, signIn: signIn, headers: &headers)
        let admission = RoomAdmission(context: context, logger: logger)
        var asks: [RoomAdmission.Ask] = []
        for name in names {
            let resumes = request.position.entry(of: name) != nil
            let ask = RoomAdmission.Ask(channel: name, member: person.member.id, verified: person.verified, resumes: resumes, client: ask.client)
            if let refusal = admission.check(ask) { return refused(refusal.refusal, reason: refusal.reason) }
            asks.append(ask)
        }
        // Counted per channel as a subscription is; given back if any is refused.
        for (index, name) in names.enumerated() {
            guard let refusal = gatekeeper.admitChannel(name) else { continue }
            for taken in names[..<index] { gatekeeper.releaseChannel(taken) }
            return refused(refusal, reason: "unavailable")
        }
        let broker = context.broker
        let channels = names
        let answerHeaders = headers
        let admissions = asks.map { admission.admit($0, on: eventLoop) }
        return EventLoopFuture.whenAllComplete(admissions, on: eventLoop).map { results -> Decision in
            var refusedFor: RoomAdmission.Refused?
            var subscriptions: [EventStream.Opening.Channel] = []
            for (name, result) in zip(channels, results) {
                let admitted = (try? result.get()) ?? RoomAdmission.Admitted(refused: nil, joined: false)
                if case .failure(let error) = result, refusedFor == nil {
                    refusedFor = RoomAdmission.Refused(
                        refusal: Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly."), reason: "unavailable"
                    )
                }
                if let refused = admitted.refused, refusedFor == nil { refusedFor = refused }
                let resume = request.position.entry(of: name).map { DeliveryFlow.Resume(after: $0.offset, epoch: $0.epoch) }
                subscriptions.append(EventStream.Opening.Channel(name: name, resume: resume, joined: admitted.joined))
            }
            if let refusedFor {
                for subscription in subscriptions {
                    if subscription.joined { broker.leave(subscription.name) }
                    gatekeeper.releaseChannel(subscription.name)
                }
                return refuse(refusedFor.refusal, reason: refusedFor.reason, client: ask.client, cors: ask.cors)
            }
            return .success(EventStream.Opening(channels: subscriptions, person: person, signIn: signIn, headers: answerHeaders, client: ask.client))
        }
    }

    /// Who: the person the site signed in; else the `uid` cookie when its signature is
    /// right; else a new identity, whose cookie goes into the answer's head.
    private func person(_ ask: Ask, signIn: SignIn?, headers: inout HTTPFields) -> ChatV2Socket.Person {
        if let signIn {
            return ChatV2Socket.Person(member: Member(id: signIn.identity, name: signIn.name), verified: signIn.identity)
        }
        var name: String?
        if let given = ask.request.name {
            if let problem = SenderName.problem(with: given) {
                context.refusals.record(
                    "Ignored an invalid name on an event stream; it shows none", route: "/events", reason: "bad_name", client: ask.client,
                    logger: logger, metadata: ["reason": "\(problem)"]
                )
            } else {
                name = SenderName.normalized(given)
            }
        }
        if let verified = context.identities.identity(cookies: ask.cookies) {
            return ChatV2Socket.Person(member: Member(id: verified, name: name), verified: verified, token: ask.request.token)
        }
        let minted = context.identities.mint()
        headers.append(HTTPField(name: .setCookie, value: Identities.setCookie(minted.cookie)))
        return ChatV2Socket.Person(member: Member(id: minted.id, name: name), verified: nil, token: ask.request.token)
    }

    /// Counts and logs a refusal (throttled), and makes it the decision.
    private func refuse(_ refusal: Refusal, reason: String, client: String, cors: HTTPFields) -> Decision {
        var level = Logger.Level.info
        var refusal = refusal
        for field in cors where refusal.headers[field.name] == nil { refusal.headers.append(field) }
        if refusal.status == .serviceUnavailable || refusal.status == .tooManyRequests {
            level = refusal.status == .serviceUnavailable ? .warning : .info
            if refusal.headers[.retryAfter] == nil { refusal.headers[.retryAfter] = "1" }
        }
        context.refusals.record(
            "Refused an event stream", route: "/events", reason: reason, client: client, logger: logger, level: level,
            metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.message)"]
        )
        return .failure(Refused(refusal: refusal, reason: reason))
    }
}

extension HTTPField.Name {
    /// Where an event stream stood, sent by a browser that reconnects.
    static let lastEventID = Self("Last-Event-ID")!
}
