import Chat
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `POST /typing/` and `POST /read/`: what a page without a socket (an event stream's)
/// says of its person, with the rules of the chat.v2 frames of the same names.
///
/// Both take `channel` (and `/read/` its `offset`) from a urlencoded or multipart body or
/// the query, and answer `204 No Content`. The person is the site's sign-in (a JWT as
/// `Authorization: Bearer` or the field `token`) or the browser's `uid` cookie; without
/// either there is nobody to show typing or to keep a read state for (403). A room
/// that would refuse the person a subscription (private, outside their sign-in's rooms,
/// banned) refuses these too; a muted person's typing is refused, as it would announce
/// words that cannot come.
struct ActivityController: Sendable {
    let broker: any Broker
    let gatekeeper: Gatekeeper
    let refusals: Refusals
    let identities: Identities
    let moderations: RoomModerations
    /// Largest request body: a channel name, an offset, a name and a token fit well within.
    static let maximumBodySize = 8 * 1024

    func addRoutes(to router: Router<ChatRequestContext>) {
        for path in ["/typing", "/read"] {
            router.post(RouterPath(path)) { request, context in try await self.handle(path, request, context: context) }
            router.on(RouterPath(path), method: .options) { request, _ in
                Response(status: .noContent, headers: gatekeeper.corsHeaders(origin: request.headers[.origin]))
            }
        }
    }

    /// What was checked of a request: who, where, and what its answer carries.
    struct Checked: Sendable {
        var member: Member
        var channel: ChannelName
        var fields: [SendController.Field]
        var cors: HTTPFields
        var client: String
    }

    func handle(_ route: String, _ request: Request, context: ChatRequestContext) async throws -> Response {
        let checked = try await check(route, request, context: context)
        let refuse = refuser(route, client: checked.client, cors: checked.cors, logger: context.logger)
        func field(_ name: String) -> String? { checked.fields.last { $0.name == name }?.value }
        do {
            if route == "/typing" {
                guard gatekeeper.mayRelayTyping(checked.member.id, in: checked.channel, from: checked.client) else {
                    var refusal = refuse(.tooManyRequests, "Typing is shown at most once every 2 s per person and room; this one was not relayed.", "rate_limited")
                    refusal.headers[.retryAfter] = "2"
                    throw refusal
                }
                try await broker.typing(checked.member, in: checked.channel)
            } else {
                guard let text = field("offset"), let offset = Offset.parse(text) else {
                    throw refuse(.badRequest, "offset must be a whole number from 0 to \(Offset.maximum): the last offset read.", nil)
                }
                if let wait = gatekeeper.takeReadMark(checked.member.id, in: checked.channel, from: checked.client) {
                    let seconds = max(1, Int((Double(wait.nanoseconds) / 1e9).rounded(.up)))
                    var refusal = refuse(.tooManyRequests, "Too many read states: at most 2 a second per room. Retry in \(seconds) s.", "rate_limited")
                    refusal.headers[.retryAfter] = String(seconds)
                    throw refusal
                }
                _ = try await broker.markRead(checked.member, in: checked.channel, upTo: offset)
            }
        } catch let error as BrokerError {
            var refusal = refuse(.serviceUnavailable, "Not passed on: \(error.message). Try again shortly.", nil, .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        return Response(status: .noContent, headers: checked.cors)
    }

    /// The request's person and room, or the refusal it gets.
    private func check(_ route: String, _ request: Request, context: ChatRequestContext) async throws -> Checked {
        var request = request
        let origin = request.headers[.origin]
        let cors = gatekeeper.corsHeaders(origin: origin)
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        let refuse = refuser(route, client: client, cors: cors, logger: context.logger)
        guard gatekeeper.allows(origin: origin) else {
            throw refuse(.forbidden, "Origin \(origin.map { String($0.unicodeScalars.prefix(100)) } ?? "") may not use this server.", nil)
        }
        let fields: [SendController.Field]
        do {
            fields = try await SendController.fields(of: &request, limit: Self.maximumBodySize)
        } catch let error as FormError {
            throw refuse(.badRequest, error.message, nil)
        } catch {
            throw refuse(.contentTooLarge, "The request body is larger than \(Self.maximumBodySize) bytes.", nil)
        }
        func field(_ name: String) -> String? { fields.last { $0.name == name }?.value }
        guard let named = field("channel") else { throw refuse(.badRequest, "Missing channel: the room this is about.", nil) }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: named)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).", nil)
        }
        let signIn: SignIn?
        switch await gatekeeper.requestSignIn(Gatekeeper.bearerToken(request.headers[.authorization]) ?? field("token"), channel: channel) {
        case .success(let person): signIn = person
        case .failure(let refusal):
            var error = refuse(refusal.status, refusal.message, nil)
            error.headers[.wwwAuthenticate] = refusal.headers[.wwwAuthenticate]
            throw error
        }
        guard let identity = signIn?.identity ?? identities.identity(cookies: request.headers[values: .cookie]) else {
            throw refuse(.forbidden, "This needs an identity: open the chat page first (it gives your browser one), then send again.", "identity_required")
        }
        if let refusal = signIn?.refusal(for: channel) ?? RoomPolicy.refusal(for: channel, identity: identity) {
            throw refuse(refusal.status, refusal.message, "private_room")
        }
        var name = signIn?.name
        if name == nil, let given = field("name") {
            if let problem = SenderName.problem(with: given) { throw refuse(.badRequest, "Invalid name: \(problem).", nil) }
            name = SenderName.normalized(given)
        }
        let room: RoomModeration
        do {
            room = try await moderations.room(of: channel, from: broker)
        } catch {
            var refusal = refuse(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", nil, .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        let now = RoomModeration.now
        if room.isBanned(identity, now: now) { throw refuse(.forbidden, RoomModeration.bannedWords, "banned") }
        if route == "/typing", let until = room.mutedUntil(identity, now: now) {
            throw refuse(.forbidden, RoomModeration.mutedWords(secondsLeft: RoomModeration.secondsLeft(until, now: now)), "muted")
        }
        return Checked(member: Member(id: identity, name: name), channel: channel, fields: fields, cors: cors, client: client)
    }

    /// Counts and logs a refusal (throttled), and makes it.
    private struct Refuser {
        let route: String
        let client: String
        let cors: HTTPFields
        let logger: Logger
        let refusals: Refusals

        func callAsFunction(_ status: HTTPResponse.Status, _ message: String, _ reason: String?, _ level: Logger.Level = .info) -> Refusal {
            refusals.record(
                route == "/typing" ? "Refused a typing notice" : "Refused a read state", route: route + "/",
                reason: reason ?? ChatMetrics.reason(status: status.code), client: client, logger: logger, level: level,
                metadata: ["status": "\(status.code)", "reason": "\(message)"]
            )
            return Refusal(status, message, headers: cors)
        }
    }

    private func refuser(_ route: String, client: String, cors: HTTPFields, logger: Logger) -> Refuser {
        Refuser(route: route, client: client, cors: cors, logger: logger, refusals: refusals)
    }
}
