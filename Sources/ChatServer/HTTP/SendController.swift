import Chat
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `POST /send/`: the original app's publish endpoint.
///
/// Form fields `data` and `channel` (default `channel_1`), from a urlencoded or
/// multipart body or from the query, the body winning, as Tornado's `get_argument`
/// read them. Answers `ok` only after the broker accepted the message. With `type`
/// (`edit`, `delete`, `react`) and `of` it changes a message instead, as chat.v2's
/// frames of those names do: what a client without a socket needs.
///
/// Served in the connection's pipeline (``SendRoute``), not by the router: the
/// decisions are here, in the order a request meets them — its head
/// (``admit(_:peer:logger:)``), its body (``read(_:body:admitted:logger:)``), the
/// broker's answer (``answer(_:admitted:)``) — and the route only carries them out.
struct SendController: Sendable {
    let broker: any Broker
    let maximumMessageSize: Int
    /// Largest request body.
    let maximumBodySize: Int
    let gatekeeper: Gatekeeper
    var metrics: ChatMetrics = .none
    let refusals: Refusals
    let identities: Identities
    let rooms: RoomPolicy
    let presence: PresenceTracker
    /// Identities that moderate (`--moderators`): their deletes remove anyone's message.
    var moderators: Set<String> = []

    var posting: Posting {
        Posting(broker: broker, gatekeeper: gatekeeper, maximumMessageSize: maximumMessageSize, rooms: rooms, presence: presence, metrics: metrics)
    }

    /// An answer, whole: its head, its body, and whether the connection ends after it.
    struct Answer: Sendable {
        var head: HTTPResponse
        var body: ByteBuffer
        /// No more of the request is read: the connection closes once this is written.
        var closes = false

        init(_ status: HTTPResponse.Status, headers: HTTPFields, body: String, closes: Bool = false) {
            var headers = headers
            headers[.contentLength] = String(body.utf8.count)
            head = HTTPResponse(status: status, headerFields: headers)
            self.body = ByteBuffer(string: body)
            self.closes = closes
        }

        /// A refusal as `/send/` has always answered it: its words as plain text.
        init(_ refusal: Refusal) {
            var headers = refusal.headers
            headers[.contentType] = "text/plain; charset=utf-8"
            self.init(refusal.status, headers: headers, body: refusal.message + "\n")
        }
    }

    /// Whether the route serves this request: `POST` and `OPTIONS` on `/send/` (or
    /// `/send`, `//send/`: the router ignored empty path segments). Everything else goes
    /// to the router, which answers it as before (404).
    static func serves(_ head: HTTPRequest) -> Bool {
        guard head.method == .post || head.method == .options, let path = head.path else { return false }
        // A late WebSocket upgrade is the router's to redirect.
        guard head.headerFields[.upgrade] == nil else { return false }
        let target = path.utf8.firstIndex(of: UInt8(ascii: "?")).map { path[..<$0] } ?? path[...]
        var segments = target.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).makeIterator()
        guard let first = segments.next(), first.elementsEqual("send".utf8) else { return false }
        return segments.next() == nil
    }

    // MARK: The head

    /// What the head of a request decided, before its body.
    struct Admitted: Sendable {
        var cors: HTTPFields
        var client: String
        var bearer: String?
        /// A trusted integration (`--api-token`).
        var trusted: Bool
    }

    /// What the head decided.
    enum Admission: Sendable {
        case admitted(Admitted)
        /// Answered at once: preflight, or refused.
        case answered(Answer)
    }

    /// Checks what the head alone decides: the origin, the address's rate, a declared
    /// body too large (refused before a byte of it is read, the connection then closed
    /// rather than the body drained).
    /// - Parameter peer: the connection's own address (`ipAddress`).
    func admit(_ head: HTTPRequest, peer: String, logger: Logger) -> Admission {
        let origin = head.headerFields[.origin]
        // The original's CORS headers (any origin), or the allowed origin echoed.
        let cors = gatekeeper.corsHeaders(origin: origin)
        let client = gatekeeper.settings.trustedProxies.clientAddress(peerAddress: peer, forwardedFor: head.headerFields[values: .xForwardedFor])
        if head.method == .options { return .answered(Answer(.noContent, headers: cors, body: "")) }
        let refuse = refuser(client: client, cors: cors, logger: logger)
        guard gatekeeper.allows(origin: origin) else {
            return .answered(refuse(.forbidden, "Origin \(origin.map { String($0.unicodeScalars.prefix(100)) } ?? "") may not publish here.", nil))
        }
        // A trusted integration posts for many people from one address: no per-address rate.
        let bearer = Gatekeeper.bearerToken(head.headerFields[.authorization])
        let trusted = gatekeeper.isTrustedIntegration(bearer: bearer)
        if !trusted, let wait = gatekeeper.takeSend(from: client) {
            let tooMany = Gatekeeper.tooMany("messages", rate: gatekeeper.settings.sendRate, wait: wait)
            var answer = refuse(.tooManyRequests, tooMany.message, nil)
            answer.head.headerFields[.retryAfter] = tooMany.retryAfter
            return .answered(answer)
        }
        if let declared = head.headerFields[.contentLength], let length = Int(declared), length > maximumBodySize {
            return .answered(bodyTooLarge(client: client, cors: cors, logger: logger))
        }
        return .admitted(Admitted(cors: cors, client: client, bearer: bearer, trusted: trusted))
    }

    /// A body over the limit: refused, and the connection closed, as its rest is not read.
    func bodyTooLarge(client: String, cors: HTTPFields, logger: Logger) -> Answer {
        refuser(client: client, cors: cors, logger: logger)(.contentTooLarge, "The request body is larger than \(maximumBodySize) bytes.", nil)
            .closing()
    }

    // MARK: The body

    /// What comes after the body is read.
    enum Step: Sendable {
        /// Answered without the broker.
        case answer(Answer)
        /// A sign-in token to check (it may need the login's key set): then ``signedIn(_:fields:head:admitted:logger:)``.
        case checkSignIn(String?, fields: [Field])
        /// A message to publish; ``answer(_:admitted:)`` answers the broker's result.
        case publish(Posting.Draft)
    }

    typealias Field = (name: String, value: String)

    /// Reads the form and checks the publish token.
    func read(_ head: HTTPRequest, body: ByteBuffer, admitted: Admitted, logger: Logger) -> Step {
        let refuse = refuser(client: admitted.client, cors: admitted.cors, logger: logger)
        let fields: [Field]
        do {
            fields = try Self.fields(query: head.path.flatMap(Self.query(of:)), body: body, contentType: head.headerFields[.contentType])
        } catch {
            return .answer(refuse(.badRequest, error.message, nil))
        }
        let tokenField = fields.last(where: { $0.name == "token" })?.value
        guard admitted.trusted || gatekeeper.allowsPublish(bearer: admitted.bearer, tokenField: tokenField) else {
            var answer = refuse(.unauthorized, "Publishing needs the publish token: send 'Authorization: Bearer <token>' or the form field 'token'.", nil)
            answer.head.headerFields[.wwwAuthenticate] = #"Bearer realm="chatroom""#
            return .answer(answer)
        }
        // The site's sign-in, from whichever of the two holds a JWT; a publish token's
        // holder is a trusted integration, let in without one.
        let presented = [admitted.bearer, tokenField].compactMap { $0 }.filter { !gatekeeper.isPublishToken($0) }
        let jwt = admitted.trusted ? nil : presented.first(where: JWTVerifier.looksLikeJWT) ?? presented.first
        if jwt != nil || (gatekeeper.logins.requireLogin && gatekeeper.settings.publishToken == nil && !admitted.trusted) {
            return .checkSignIn(jwt, fields: fields)
        }
        return draft(fields: fields, head: head, signIn: nil, admitted: admitted, logger: logger)
    }

    /// Goes on once the sign-in token was checked.
    func signedIn(_ outcome: Logins.Outcome, fields: [Field], head: HTTPRequest, admitted: Admitted, logger: Logger) -> Step {
        switch outcome {
        case .signedIn(let person):
            return draft(fields: fields, head: head, signIn: person, admitted: admitted, logger: logger)
        case .refused(let problem):
            var answer = refuser(client: admitted.client, cors: admitted.cors, logger: logger)(.unauthorized, problem.description, problem.metric)
            answer.head.headerFields[.wwwAuthenticate] = #"Bearer realm="chatroom""#
            return .answer(answer)
        case .anonymous:
            return draft(fields: fields, head: head, signIn: nil, admitted: admitted, logger: logger)
        }
    }

    private func draft(fields: [Field], head: HTTPRequest, signIn: SignIn?, admitted: Admitted, logger: Logger) -> Step {
        func field(_ name: String) -> String? { fields.last(where: { $0.name == name })?.value }
        let refuse = refuser(client: admitted.client, cors: admitted.cors, logger: logger)
        let identity = signIn?.identity ?? identities.identity(cookies: head.headerFields[values: .cookie])
        let kind: MessageKind
        let data: String?
        switch Self.change(type: field("type"), of: field("of"), data: field("data"), emoji: field("emoji"), identity: identity) {
        case .success(let change): (kind, data) = change
        case .failure(let refusal): return .answer(refuse(refusal.status, refusal.message, refusal.status == .forbidden ? "identity_required" : nil))
        }
        switch posting.draft(
            data: data, channel: field("channel"), name: kind == .message ? signIn.map(\.name) ?? field("name") : nil,
            key: head.headerFields[Self.idempotencyKeyHeader], identity: identity, client: admitted.client, kind: kind, signIn: signIn
        ) {
        case .success(var draft):
            // With --publish-token, whoever posts here holds it: a trusted integration,
            // which a capped room takes posts from without a place.
            let integration = gatekeeper.settings.publishToken != nil || admitted.trusted
            draft.placeHeld = integration
            // For the same reason its messages are exempt from slow mode (not its changes:
            // holding the token makes no one the author of others' words). A moderator's
            // sign-in is exempt too, and their delete removes anyone's message, as on a socket.
            draft.moderator = (integration && kind == .message) || signIn?.isModerator == true || isModeratorsCookie(identity, head: head)
            return .publish(draft)
        case .failure(let refusal):
            return .answer(refuse(refusal.status, refusal.message, nil))
        }
    }

    /// Whether `identity` is one of `--moderators`, proven by its cookie on the chat's own
    /// page (see ``ModeratorAuthorizer/moderatorCookie(_:_:)``).
    private func isModeratorsCookie(_ identity: String?, head: HTTPRequest) -> Bool {
        guard !gatekeeper.logins.requireLogin, let identity, moderators.contains(identity),
            identities.identity(cookies: head.headerFields[values: .cookie]) == identity
        else { return false }
        return ModeratorAuthorizer.isOwnPage(origin: head.headerFields[.origin], authority: head.authority, allowedOrigins: gatekeeper.settings.allowedOrigins)
    }

    /// What a request's `type` asks (chat.v2's names): `send` (the default, the original's
    /// message), or `edit` (`data`: the new text), `delete` or `react` (`emoji`: toggled)
    /// of message `of`; with the change's `data`.
    static func change(type: String?, of: String?, data: String?, emoji: String?, identity: String?) -> Result<(MessageKind, String?), Refusal> {
        guard let type, type != "send" else { return .success((.message, data)) }
        guard ["edit", "delete", "react"].contains(type) else {
            return .failure(Refusal(.badRequest, "Invalid type \"\(String(type.unicodeScalars.prefix(16)))\": it is send (the default), edit, delete or react."))
        }
        guard let of, let target = Offset.parse(of), target > 0 else {
            return .failure(Refusal(.badRequest, "\"of\" must be the offset of a message: a whole number from 1 to \(Offset.maximum)."))
        }
        switch type {
        case "edit":
            return .success((.edit(of: target), data))
        case "delete":
            return .success((.delete(of: target), nil))
        default:
            // A reaction is a person's: without an identity it would be a new one each time.
            guard identity != nil else {
                return .failure(Refusal(.forbidden, "Reacting needs an identity: open the chat page first (it gives your browser one), then send again."))
            }
            guard let emoji else { return .failure(Refusal(.badRequest, "Invalid reaction: \"emoji\" must be one emoji.")) }
            return .success((.react(of: target, on: true), emoji))
        }
    }

    // MARK: The answer

    /// The broker's result as the answer: the original's `ok`, with the message's offset
    /// and epoch in headers, or the refusal.
    func answer(_ result: Result<Publication, Posting.Failure>, admitted: Admitted, logger: Logger) -> Answer {
        switch result {
        case .success(let publication):
            var headers = admitted.cors
            headers[.contentType] = "text/plain; charset=utf-8"
            // The body stays the original's `ok`; the page learns which message was its own.
            headers[Self.offsetHeader] = String(publication.message.offset)
            headers[Self.epochHeader] = publication.message.epoch
            return Answer(.ok, headers: headers, body: "ok")
        case .failure(let failure):
            var answer = refuser(client: admitted.client, cors: admitted.cors, logger: logger, level: failure.level)(
                failure.refusal.status, failure.refusal.message, failure.reason
            )
            answer.head.headerFields[.retryAfter] = failure.refusal.headers[.retryAfter]
            return answer
        }
    }

    /// Counts and logs a refusal (throttled), and makes its answer.
    private func refuser(
        client: String, cors: HTTPFields, logger: Logger, level: Logger.Level = .info
    ) -> (HTTPResponse.Status, String, String?) -> Answer {
        { status, message, reason in
            refusals.record(
                "Refused a message", route: "/send/", reason: reason ?? ChatMetrics.reason(status: status.code), client: client,
                logger: logger, level: level, metadata: ["status": "\(status.code)", "reason": "\(message)"]
            )
            return Answer(Refusal(status, message, headers: cors))
        }
    }

    static let offsetHeader = HTTPField.Name("Chat-Offset")!
    static let epochHeader = HTTPField.Name("Chat-Epoch")!
    static let idempotencyKeyHeader = HTTPField.Name("Idempotency-Key")!

    // MARK: Forms

    /// The query of a request target: what follows its first `?`.
    static func query(of target: String) -> Substring? {
        target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[target.index(after: $0)...] }
    }

    /// Query fields, then body fields, in order: the body is a urlencoded or multipart form.
    static func fields(query: Substring?, body: ByteBuffer, contentType: String?) throws(FormError) -> [Field] {
        var fields = try query.map { query throws(FormError) in try FormData.pairs(query) } ?? []
        guard body.readableBytes > 0 else { return fields }
        if let boundary = Multipart.boundary(in: contentType ?? "") {
            fields += try Multipart.fields(Array(body.readableBytesView), boundary: boundary)
        } else {
            fields += try FormData.pairs(utf8: body.readableBytesView)
        }
        guard fields.count <= FormData.maximumFields else { throw FormError.tooManyFields }
        return fields
    }

    /// The fields of a request the router serves (the moderation routes take them too).
    /// - Throws: ``FormError`` for a form the parsers refuse, another error for a body over `limit`.
    static func fields(of request: inout Request, limit: Int) async throws -> [Field] {
        let body = try await request.collectBody(upTo: limit)
        return try fields(query: request.uri.query.map { $0[...] }, body: body, contentType: request.headers[.contentType])
    }
}

extension SendController.Answer {
    /// The same answer, ending the connection.
    func closing() -> Self {
        var answer = self
        answer.closes = true
        answer.head.headerFields[.connection] = "close"
        return answer
    }
}
