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
/// banned, a capped room that is full without them) refuses these too; a muted person's
/// typing is refused, as it would announce words that cannot come. The allowances are
/// taken before the broker is asked anything.
struct ActivityController: Sendable {
    let broker: any Broker
    let gatekeeper: Gatekeeper
    let refusals: Refusals
    let identities: Identities
    let moderations: RoomModerations
    /// Capped rooms: only their people may be shown typing there.
    let rooms: RoomPolicy
    /// This instance and how long a place lasts, for a person who takes one.
    let presence: PresenceTracker
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

    /// Who asks, about which room, and what the answer carries.
    struct Asker: Sendable {
        var member: Member
        var channel: ChannelName
        var fields: [SendController.Field]
        var cors: HTTPFields
        var client: String
    }

    func handle(_ route: String, _ request: Request, context: ChatRequestContext) async throws -> Response {
        let asker = try await identify(route, request, context: context)
        let refuse = refuser(route, client: asker.client, cors: asker.cors, logger: context.logger)
        func field(_ name: String) -> String? { asker.fields.last { $0.name == name }?.value }
        // The allowance first: a refused request costs the broker nothing.
        let limit: Gatekeeper.ActivityLimit?
        var offset: Int64 = 0
        if route == "/typing" {
            limit = gatekeeper.typingLimit(asker.member.id, in: asker.channel, from: asker.client)
        } else {
            guard let text = field("offset"), let parsed = Offset.parse(text) else {
                throw refuse(.badRequest, "offset must be a whole number from 0 to \(Offset.maximum): the last offset read.", nil)
            }
            offset = parsed
            limit = gatekeeper.takeReadMark(asker.member.id, in: asker.channel, from: asker.client)
        }
        if let limit { throw Self.tooMany(route, limit, refuse: refuse) }
        do {
            try await admit(route, asker, refuse: refuse)
            if route == "/typing" {
                try await broker.typing(asker.member, in: asker.channel)
            } else {
                _ = try await broker.markRead(asker.member, in: asker.channel, upTo: offset)
            }
        } catch let error as BrokerError {
            var refusal = refuse(.serviceUnavailable, "Not passed on: \(error.message). Try again shortly.", nil, .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        return Response(status: .noContent, headers: asker.cors)
    }

    /// The 429 of a limit, in words that say whose it is.
    private static func tooMany(_ route: String, _ limit: Gatekeeper.ActivityLimit, refuse: Refuser) -> Refusal {
        let (message, wait): (String, TimeAmount) = switch (route, limit) {
        case ("/typing", .person(let wait)): ("Typing is shown at most once every 2 s per person and room; this one was not relayed.", wait)
        case ("/typing", .address(let wait)): ("Too many typing notices from your address: at most 5 a second, for all its people together.", wait)
        case (_, .person(let wait)): ("Too many read states: at most 2 a second per person and room.", wait)
        case (_, .address(let wait)): ("Too many read states from your address: at most 10 a second, for all its people together.", wait)
        }
        let seconds = max(1, Int((Double(wait.nanoseconds) / 1e9).rounded(.up)))
        var refusal = refuse(.tooManyRequests, message + " Retry in \(seconds) s.", "rate_limited")
        refusal.headers[.retryAfter] = String(seconds)
        return refusal
    }

    /// Who asks, about which room: or the refusal they get (nothing asked of the broker yet).
    private func identify(_ route: String, _ request: Request, context: ChatRequestContext) async throws -> Asker {
        var request = request
        let origin = request.headers[.origin]
        let cors = gatekeeper.corsHeaders(origin: origin)
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        let refuse = refuser(route, client: client, cors: cors, logger: context.logger)
        guard gatekeeper.allows(origin: origin) else {
            throw refuse(.forbidden, "Origin \(origin.map { String($0.unicodeScalars.prefix(100)) } ?? "") may not use this server.", nil)
        }
        let tooLarge = "The request body is larger than \(Self.maximumBodySize) bytes."
        if let declared = request.headers[.contentLength], let length = Int(declared), length > Self.maximumBodySize {
            throw refuse(.contentTooLarge, tooLarge, nil)
        }
        let fields: [SendController.Field]
        do {
            fields = try await SendController.fields(of: &request, limit: Self.maximumBodySize)
        } catch let error as FormError {
            throw refuse(.badRequest, error.message, nil)
        } catch is NIOTooManyBytesError {
            throw refuse(.contentTooLarge, tooLarge, nil)
        } catch {
            throw refuse(.badRequest, "The request's body was cut short: nothing was done.", nil)
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
        if let outside = signIn?.refusal(for: channel) { throw refuse(outside.status, outside.message, "forbidden") }
        if let refusal = RoomPolicy.refusal(for: channel, identity: identity) { throw refuse(refusal.status, refusal.message, "private_room") }
        // A signed-in person shows their sign-in's name (or none), as everywhere.
        var name: String?
        if let signIn {
            name = signIn.name
        } else if let given = field("name") {
            if let problem = SenderName.problem(with: given) { throw refuse(.badRequest, "Invalid name: \(problem).", nil) }
            name = SenderName.normalized(given)
        }
        return Asker(member: Member(id: identity, name: name), channel: channel, fields: fields, cors: cors, client: client)
    }

    /// What the room says of the person: banned, muted (typing only), or outside a full
    /// capped room (a place is taken if there is one, as a subscription would).
    /// - Throws: the refusal, or ``BrokerError`` when the broker cannot say.
    private func admit(_ route: String, _ asker: Asker, refuse: Refuser) async throws {
        let room = try await moderations.room(of: asker.channel, from: broker)
        let now = RoomModeration.now
        let identity = asker.member.id
        if room.isBanned(identity, now: now) { throw refuse(.forbidden, RoomModeration.bannedWords, "banned") }
        if route == "/typing", let until = room.mutedUntil(identity, now: now) {
            throw refuse(.forbidden, RoomModeration.mutedWords(secondsLeft: RoomModeration.secondsLeft(until, now: now)), "muted")
        }
        if let cap = rooms.cap(of: asker.channel),
            try await !broker.admit(identity, to: asker.channel, instance: presence.instance, cap: cap, lifetime: presence.lifetime)
        {
            throw refuse(.forbidden, "This room is full: it holds at most \(cap) \(cap == 1 ? "person" : "people"), and only they are shown in it.", "room_full")
        }
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
