import Chat
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Who may use the moderation API: each way a request can prove it comes from a
/// moderator, tried in order.
struct ModeratorAuthorizer: Sendable {
    /// What one way makes of a request.
    enum Verdict: Sendable {
        case moderator(Moderator)
        /// The request is this way's kind, and refused: why (401 or 403).
        case refused(Refusal)
        /// Not this way's kind of request.
        case notMine
    }

    /// One way to prove a moderator.
    typealias Way = @Sendable (Request) async -> Verdict

    var ways: [Way]

    /// Whether any way is configured; without one the API is off.
    var isEnabled: Bool { !ways.isEmpty }

    /// The moderator the request proves; else the first way's refusal that applies
    /// (`.notMine` when no way knew the request).
    func authorize(_ request: Request) async -> Verdict {
        var refusal: Refusal?
        for way in ways {
            switch await way(request) {
            case .moderator(let moderator): return .moderator(moderator)
            case .refused(let why): refusal = refusal ?? why
            case .notMine: continue
            }
        }
        return refusal.map { .refused($0) } ?? .notMine
    }

    /// `Authorization: Bearer <JWT>` of a person the site signed in as a moderator. A
    /// token that does not verify is told why (401); a sign-in that is no moderator's, 403.
    static func signedIn(_ logins: Logins) -> Way {
        { request in
            guard let token = Gatekeeper.bearerToken(request.headers[.authorization]), logins.reads(token) else { return .notMine }
            switch await logins.check(token) {
            case .signedIn(let signIn) where signIn.isModerator:
                return .moderator(Moderator(by: signIn.identity, identity: signIn.identity, rooms: signIn.rooms, subject: signIn.subject))
            case .signedIn:
                return .refused(Refusal(.forbidden, "Your sign-in is not a moderator's: only people the site signs in with role: moderator may moderate."))
            case .refused(let problem):
                return .refused(Refusal(.unauthorized, problem.description))
            case .anonymous:
                return .notMine
            }
        }
    }

    /// The `uid` cookie of an identity named by `--moderators`, as a chat.v2 socket's
    /// moderator is: what the page uses when it has no socket. Only from the chat's own
    /// pages (see ``isOwnPage(origin:authority:allowedOrigins:)``): the cookie is
    /// `SameSite=Lax`, and this keeps out a page of another host of the same site.
    static func moderatorCookie(_ identities: Identities, _ moderators: Set<String>, allowedOrigins: Set<String>?) -> Way {
        { request in
            guard let identity = identities.identity(cookies: request.headers[values: .cookie]), moderators.contains(identity) else { return .notMine }
            let origin = request.headers[.origin]
            guard isOwnPage(origin: origin, authority: request.head.authority, allowedOrigins: allowedOrigins) else {
                let shown = String((origin ?? "").unicodeScalars.prefix(100))
                return .refused(Refusal(.forbidden, "A moderator's cookie counts only on the chat's own pages: this request comes from \(shown)."))
            }
            return .moderator(Moderator(by: identity, identity: identity, rooms: nil, subject: nil))
        }
    }

    /// Whether a request with this `Origin` comes from the server's own page: see
    /// ``PageOrigin/isOwnPage(origin:authority:allowedOrigins:)``.
    static func isOwnPage(origin: String?, authority: String?, allowedOrigins: Set<String>?) -> Bool {
        PageOrigin.isOwnPage(origin: origin, authority: authority, allowedOrigins: allowedOrigins)
    }

    /// `Authorization: Bearer <token>` with `--admin-token`, compared in constant time.
    static func adminToken(_ token: String) -> Way {
        return { request in
            guard let presented = Gatekeeper.bearerToken(request.headers[.authorization]), HMACSHA256.sameSecret(presented, token) else { return .notMine }
            return .moderator(.admin)
        }
    }
}

/// The moderation API (docs/OPERATIONS.md): `POST /api/delete`, `/api/mute`, `/api/ban`,
/// `/api/slowmode` and `DELETE /api/ban`.
///
/// Fields come from the query and a urlencoded, multipart or JSON body (the body winning).
/// Every answer that is not 200 is a plain-text refusal, counted and logged (throttled)
/// like those of `/send/`. Without any way to authorise (no `--admin-token`) every route
/// answers 404 saying how to turn the API on.
struct ModerationController: Sendable {
    let moderating: Moderating
    let authorizer: ModeratorAuthorizer
    let gatekeeper: Gatekeeper
    let refusals: Refusals
    /// Gives a `sub` its identity, for a `user` named by its sign-in.
    let identities: Identities
    /// Largest request body.
    static let maximumBodySize = 16 * 1024

    func addRoutes(to router: Router<ChatRequestContext>) {
        for action in ["delete", "mute", "ban", "slowmode"] {
            router.post("/api/\(action)") { request, context in try await self.handle(action, request, context: context) }
        }
        router.delete("/api/ban") { request, context in try await self.handle("unban", request, context: context) }
    }

    func handle(_ action: String, _ request: Request, context: ChatRequestContext) async throws -> Response {
        var request = request
        let route = action == "unban" ? "/api/ban" : "/api/\(action)"
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        func refuse(_ status: HTTPResponse.Status, _ message: String, reason: String? = nil) -> Refusal {
            refusals.record(
                "Refused a moderation request", route: route, reason: reason ?? ChatMetrics.reason(status: status.code), client: client,
                logger: context.logger, metadata: ["status": "\(status.code)", "reason": "\(message)"]
            )
            return Refusal(status, message)
        }
        guard authorizer.isEnabled else {
            throw refuse(
                .notFound,
                "Moderation over HTTP is off on this server: start it with --admin-token SECRET (or $CHATROOM_ADMIN_TOKEN), then send 'Authorization: Bearer SECRET'; or sign moderators in with JWTs (role: moderator); or name moderators' identities with --moderators.",
                reason: "disabled"
            )
        }
        var moderator: Moderator
        let verdict = await authorizer.authorize(request)
        switch verdict {
        case .moderator(let found):
            moderator = found
        case .refused, .notMine:
            var why = Refusal(.unauthorized, "Moderation needs 'Authorization: Bearer <admin token>' (the server's --admin-token) or a moderator's sign-in token.")
            if case .refused(let told) = verdict { why = told }
            var refusal = refuse(why.status, why.message)
            if why.status == .unauthorized { refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""# }
            throw refusal
        }
        moderator.address = client
        let fields: [(name: String, value: String)]
        do {
            fields = try await Self.fields(of: &request, limit: Self.maximumBodySize)
        } catch let error as FormError {
            throw refuse(.badRequest, error.message)
        } catch let error as Refusal {
            throw refuse(error.status, error.message)
        } catch is NIOTooManyBytesError {
            throw refuse(.contentTooLarge, "The request body is larger than \(Self.maximumBodySize) bytes.")
        } catch {
            throw refuse(.badRequest, "The request's body was cut short: nothing was done.")
        }
        func field(_ name: String) -> String? { fields.last { $0.name == name }?.value }
        guard let named = field("channel") else { throw refuse(.badRequest, "Missing channel: the room to moderate.") }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: named)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).")
        }
        if let rooms = moderator.rooms, !rooms.allows(channel) {
            throw refuse(.forbidden, "Your sign-in does not open the room '\(channel)': you moderate only the rooms it opens.")
        }
        var answer: [(String, Answer)] = [("ok", .bool(true)), ("action", .text(action)), ("channel", .text(channel.rawValue))]
        if action == "delete" {
            guard let text = field("offset"), let offset = Offset.parse(text), offset > 0 else {
                throw refuse(.badRequest, "offset must be the offset of a message: a whole number from 1 to \(Offset.maximum).")
            }
            switch await moderating.delete(offset, in: channel, by: moderator, logger: context.logger) {
            case .success(let publication):
                answer += [("of", .number(offset)), ("offset", .number(publication.message.offset)), ("epoch", .text(publication.message.epoch))]
            case .failure(let refusal):
                var refused = refuse(refusal.status, refusal.message)
                refused.headers[.retryAfter] = refusal.headers[.retryAfter]
                throw refused
            }
            return Self.json(answer)
        }
        let moderation: ModerationAction
        // A signed-in person may be named by their `sub` (the site's own id for them).
        if let sub = field("sub"), sub.isEmpty || sub.utf8.count > 255 {
            throw refuse(.badRequest, "sub must be 1–255 bytes: the site's id of a signed-in person.")
        }
        let user = field("user") ?? field("sub").map(identities.id(ofSubject:))
        switch Moderating.action(action, user: user, seconds: field("seconds")) {
        case .success(let made): moderation = made
        case .failure(let refusal): throw refuse(refusal.status, refusal.message)
        }
        switch await moderating.moderate(moderation, in: channel, by: moderator, logger: context.logger) {
        case .success(let outcome):
            if let user = moderation.user { answer.append(("user", .text(user))) }
            if let seconds = moderation.seconds { answer.append(("seconds", .number(Int64(seconds)))) }
            switch outcome.change {
            case .muted(_, let until), .banned(_, let until): answer.append(("until", .number(until)))
            default: break
            }
        case .failure(let refusal):
            var refused = refuse(refusal.status, refusal.message)
            refused.headers[.retryAfter] = refusal.headers[.retryAfter]
            throw refused
        }
        return Self.json(answer)
    }

    /// A value of the JSON answer.
    enum Answer {
        case bool(Bool)
        case text(String)
        case number(Int64)
    }

    static func json(_ fields: [(String, Answer)]) -> Response {
        var json = ByteBuffer()
        json.writeStaticString("{")
        for (index, (name, value)) in fields.enumerated() {
            if index > 0 { json.writeStaticString(",") }
            JSON.writeString(name, into: &json)
            json.writeStaticString(":")
            switch value {
            case .bool(let flag): json.writeString(flag ? "true" : "false")
            case .text(let text): JSON.writeString(text, into: &json)
            case .number(let number): json.writeString(String(number))
            }
        }
        json.writeStaticString("}\n")
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: json))
    }

    static func notAField(_ name: String) -> Refusal {
        Refusal(.badRequest, "The field \"\(String(name.unicodeScalars.prefix(24)))\" must be a string or a whole number.")
    }

    /// The query's fields, then the body's: a JSON object (strings, numbers and booleans),
    /// or a urlencoded or multipart form.
    static func fields(of request: inout Request, limit: Int) async throws -> [(name: String, value: String)] {
        guard request.headers[.contentType]?.lowercased().contains("json") == true else {
            return try await SendController.fields(of: &request, limit: limit)
        }
        var fields = try request.uri.query.map { query throws(FormError) in try FormData.pairs(query[...]) } ?? []
        let body = try await request.collectBody(upTo: limit)
        guard body.readableBytes > 0 else { return fields }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            throw Refusal(.badRequest, "The body must be a JSON object, e.g. {\"channel\":\"general\",\"user\":\"…\",\"seconds\":600}.")
        }
        for (name, value) in object.sorted(by: { $0.key < $1.key }) {
            switch value {
            case let text as String:
                fields.append((name, text))
            // JSON's true and false arrive as numbers: they would read as 1 and 0.
            case let number as NSNumber where String(cString: number.objCType) != "c":
                let value = number.doubleValue
                guard value.rounded() == value, abs(value) <= 9_007_199_254_740_991 else { throw Self.notAField(name) }
                fields.append((name, String(Int64(value))))
            default:
                throw Self.notAField(name)
            }
        }
        return fields
    }
}
