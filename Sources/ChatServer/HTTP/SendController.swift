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
    let identities: Identities

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
        guard gatekeeper.allows(origin: request.headers[.origin]) else {
            throw refuse(.forbidden, "Origin \(request.headers[.origin]?.prefix(100) ?? "") may not publish here.", cors, client, context: context)
        }
        if let wait = gatekeeper.takeSend(from: client) {
            let tooMany = Gatekeeper.tooMany("messages", rate: gatekeeper.settings.sendRate, wait: wait)
            var refusal = refuse(.tooManyRequests, tooMany.message, cors, client, context: context)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            throw refusal
        }
        let fields: [(name: String, value: String)]
        do {
            fields = try await Self.fields(of: &request, limit: maximumBodySize)
        } catch {
            throw refuse(.contentTooLarge, "The request body is larger than \(maximumBodySize) bytes.", cors, client, context: context)
        }
        guard gatekeeper.allowsPublish(authorization: request.headers[.authorization], tokenField: fields.last(where: { $0.name == "token" })?.value) else {
            var refusal = refuse(.unauthorized, "Publishing needs the publish token: send 'Authorization: Bearer <token>' or the form field 'token'.", cors, client, context: context)
            refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""#
            throw refusal
        }
        guard let data = fields.last(where: { $0.name == "data" })?.value,
            !data.unicodeScalars.allSatisfy(\.properties.isWhitespace)
        else {
            throw refuse(.badRequest, "Missing message: send the text in the form field 'data'.", cors, client, context: context)
        }
        guard data.utf8.count <= maximumMessageSize else {
            throw refuse(.contentTooLarge, "Message too long: at most \(maximumMessageSize) bytes, got \(data.utf8.count).", cors, client, context: context)
        }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: fields.last(where: { $0.name == "channel" })?.value ?? ChannelName.fallback.rawValue)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).", cors, client, context: context)
        }
        let identity = identities.identity(cookies: request.headers[values: .cookie])
        if let reason = RoomPolicy.postingRefusal(for: channel, identity: identity) {
            throw refuse(.forbidden, reason, cors, client, context: context)
        }
        let givenName = fields.last(where: { $0.name == "name" })?.value
        if let givenName, let problem = SenderName.problem(with: givenName) {
            throw refuse(.badRequest, "Invalid name: \(problem).", cors, client, context: context)
        }
        let message: Message
        do {
            let started = NIODeadline.now()
            message = try await broker.publish(ByteBuffer(string: data), name: SenderName.normalized(givenName), to: channel)
            metrics.published(inNanoseconds: (NIODeadline.now() - started).nanoseconds)
        } catch let error as BrokerError {
            switch error.kind {
            case .unavailable:
                var refusal = refuse(.serviceUnavailable, "Message not sent: \(error.message). Try again shortly.", cors, client, context: context, level: .warning)
                refusal.headers[.retryAfter] = "1"
                throw refusal
            case .failed:
                throw refuse(.internalServerError, "Message not sent: \(error.message).", cors, client, context: context, level: .error)
            }
        }
        if let identity { await notify(about: message, from: identity, context: context) }
        var headers = cors
        headers[.contentType] = "text/plain; charset=utf-8"
        // The body stays the original's `ok`; the page learns which message was its own.
        headers[Self.offsetHeader] = String(message.offset)
        headers[Self.epochHeader] = message.epoch
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "ok")))
    }

    /// A message in a one-to-one room: tells the other person, in their inbox (its data
    /// is the room, its name the sender's). The message itself is already published and
    /// acknowledged either way; a notice that cannot be published is logged, and the
    /// page still finds the room's news when it next opens it.
    private func notify(about message: Message, from sender: String, context: ChatRequestContext) async {
        guard let (a, b) = RoomPolicy.pair(of: message.channel), let inbox = RoomPolicy.inbox(of: sender == a ? b : a) else { return }
        do {
            _ = try await broker.publish(ByteBuffer(string: message.channel.rawValue), name: message.name, to: inbox)
        } catch {
            context.logger.warning("Could not tell the other person of a one-to-one message", metadata: ["channel": "\(message.channel)", "error": "\(error)"])
        }
    }

    static let offsetHeader = HTTPField.Name("Chat-Offset")!
    static let epochHeader = HTTPField.Name("Chat-Epoch")!

    private func refuse(
        _ status: HTTPResponse.Status,
        _ message: String,
        _ cors: HTTPFields,
        _ client: String,
        context: ChatRequestContext,
        level: Logger.Level = .info
    ) -> PlainTextError {
        metrics.refused(route: "/send/", reason: ChatMetrics.reason(status: status.code))
        context.logger.log(level: level, "Refused a message", metadata: ["status": "\(status.code)", "reason": "\(message)", "client": "\(client)"])
        return PlainTextError(status: status, message: message, headers: cors)
    }

    /// Query fields, then body fields, in order.
    static func fields(of request: inout Request, limit: Int) async throws -> [(name: String, value: String)] {
        var fields = request.uri.query.map { FormData.pairs($0[...]) } ?? []
        let body = try await request.collectBody(upTo: limit)
        guard body.readableBytes > 0 else { return fields }
        let contentType = request.headers[.contentType] ?? ""
        if let boundary = Multipart.boundary(in: contentType) {
            fields += Multipart.fields(body, boundary: boundary)
        } else {
            fields += FormData.pairs(String(buffer: body)[...])
        }
        return fields
    }
}
