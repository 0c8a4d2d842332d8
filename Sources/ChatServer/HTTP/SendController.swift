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
/// read them. Answers `ok` only after the broker accepted the message.
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

    func addRoutes(to router: Router<ChatRequestContext>) {
        // Hummingbird's router ignores a trailing slash: this serves /send/ and /send.
        router.post("/send/") { request, context in try await self.send(request, context: context) }
        router.on("/send/", method: .options) { request, _ in
            Response(status: .noContent, headers: gatekeeper.corsHeaders(origin: request.headers[.origin]))
        }
    }

    func send(_ request: Request, context: ChatRequestContext) async throws -> Response {
        var request = request
        // The original's CORS headers (any origin), or the allowed origin echoed.
        let cors = gatekeeper.corsHeaders(origin: request.headers[.origin])
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        func refuse(_ status: HTTPResponse.Status, _ message: String, reason: String? = nil, level: Logger.Level = .info) -> Refusal {
            refusals.record(
                "Refused a message", route: "/send/", reason: reason ?? ChatMetrics.reason(status: status.code), client: client,
                logger: context.logger, level: level, metadata: ["status": "\(status.code)", "reason": "\(message)"]
            )
            return Refusal(status, message, headers: cors)
        }
        guard gatekeeper.allows(origin: request.headers[.origin]) else {
            throw refuse(.forbidden, "Origin \(request.headers[.origin].map { String($0.unicodeScalars.prefix(100)) } ?? "") may not publish here.")
        }
        // A trusted integration posts for many people from one address: no per-address rate.
        let bearer = Gatekeeper.bearerToken(request.headers[.authorization])
        let trusted = gatekeeper.isTrustedIntegration(bearer: bearer)
        if !trusted, let wait = gatekeeper.takeSend(from: client) {
            let tooMany = Gatekeeper.tooMany("messages", rate: gatekeeper.settings.sendRate, wait: wait)
            var refusal = refuse(.tooManyRequests, tooMany.message)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            throw refusal
        }
        // Too large by its own word: refused before a byte of the body is read, and the
        // connection closed rather than the body drained.
        if let declared = request.headers[.contentLength], let length = Int(declared), length > maximumBodySize {
            var refusal = refuse(.contentTooLarge, "The request body is larger than \(maximumBodySize) bytes.")
            refusal.headers[.connection] = "close"
            context.closeAfterAnswer()
            throw refusal
        }
        let fields: [(name: String, value: String)]
        do {
            fields = try await Self.fields(of: &request, limit: maximumBodySize)
        } catch let error as FormError {
            throw refuse(.badRequest, error.message)
        } catch {
            throw refuse(.contentTooLarge, "The request body is larger than \(maximumBodySize) bytes.")
        }
        let tokenField = fields.last(where: { $0.name == "token" })?.value
        guard trusted || gatekeeper.allowsPublish(bearer: bearer, tokenField: tokenField) else {
            var refusal = refuse(.unauthorized, "Publishing needs the publish token: send 'Authorization: Bearer <token>' or the form field 'token'.")
            refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""#
            throw refusal
        }
        // The site's sign-in, from whichever of the two holds a JWT; a publish token's
        // holder is a trusted integration, let in without one.
        let presented = [bearer, tokenField].compactMap { $0 }.filter { !gatekeeper.isPublishToken($0) }
        let jwt = trusted ? nil : presented.first(where: JWTVerifier.looksLikeJWT) ?? presented.first
        var signIn: SignIn?
        if jwt != nil || (gatekeeper.logins.requireLogin && gatekeeper.settings.publishToken == nil && !trusted) {
            switch await gatekeeper.logins.check(jwt) {
            case .signedIn(let person):
                signIn = person
            case .refused(let problem):
                var refusal = refuse(.unauthorized, problem.description, reason: problem.metric)
                refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""#
                throw refusal
            case .anonymous:
                break
            }
        }
        func field(_ name: String) -> String? { fields.last(where: { $0.name == name })?.value }
        let posting = Posting(
            broker: broker, gatekeeper: gatekeeper, maximumMessageSize: maximumMessageSize, rooms: rooms, presence: presence, metrics: metrics
        )
        var draft: Posting.Draft
        switch posting.draft(
            data: field("data"), channel: field("channel"), name: signIn.map(\.name) ?? field("name"), key: request.headers[Self.idempotencyKeyHeader],
            identity: signIn?.identity ?? identities.identity(cookies: request.headers[values: .cookie]), client: client, signIn: signIn
        ) {
        case .success(let checked):
            draft = checked
            // With --publish-token, whoever posts here holds it: a trusted integration,
            // which a capped room takes posts from without a place.
            let integration = gatekeeper.settings.publishToken != nil || trusted
            draft.placeHeld = integration
            // For the same reason it is exempt from slow mode.
            draft.moderator = integration
        case .failure(let refusal):
            throw refuse(refusal.status, refusal.message)
        }
        let message: Message
        switch await posting.publish(draft, logger: context.logger) {
        case .success(let publication):
            message = publication.message
        case .failure(let failure):
            var refusal = refuse(failure.refusal.status, failure.refusal.message, reason: failure.reason, level: failure.level)
            refusal.headers[.retryAfter] = failure.refusal.headers[.retryAfter]
            throw refusal
        }
        var headers = cors
        headers[.contentType] = "text/plain; charset=utf-8"
        // The body stays the original's `ok`; the page learns which message was its own.
        headers[Self.offsetHeader] = String(message.offset)
        headers[Self.epochHeader] = message.epoch
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "ok")))
    }

    static let offsetHeader = HTTPField.Name("Chat-Offset")!
    static let epochHeader = HTTPField.Name("Chat-Epoch")!
    static let idempotencyKeyHeader = HTTPField.Name("Idempotency-Key")!

    /// Query fields, then body fields, in order.
    /// - Throws: ``FormError`` for a form the parsers refuse, another error for a body over `limit`.
    static func fields(of request: inout Request, limit: Int) async throws -> [(name: String, value: String)] {
        var fields = try request.uri.query.map { query throws(FormError) in try FormData.pairs(query[...]) } ?? []
        let body = try await request.collectBody(upTo: limit)
        guard body.readableBytes > 0 else { return fields }
        let contentType = request.headers[.contentType] ?? ""
        if let boundary = Multipart.boundary(in: contentType) {
            fields += try Multipart.fields(Array(body.readableBytesView), boundary: boundary)
        } else {
            fields += try FormData.pairs(utf8: body.readableBytesView)
        }
        guard fields.count <= FormData.maximumFields else { throw FormError.tooManyFields }
        return fields
    }
}
