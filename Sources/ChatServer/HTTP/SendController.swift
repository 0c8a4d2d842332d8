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
        if let wait = gatekeeper.takeSend(from: client) {
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
        guard gatekeeper.allowsPublish(authorization: request.headers[.authorization], tokenField: fields.last(where: { $0.name == "token" })?.value) else {
            var refusal = refuse(.unauthorized, "Publishing needs the publish token: send 'Authorization: Bearer <token>' or the form field 'token'.")
            refusal.headers[.wwwAuthenticate] = #"Bearer realm="chatroom""#
            throw refusal
        }
        guard let data = fields.last(where: { $0.name == "data" })?.value,
            !data.unicodeScalars.allSatisfy(\.properties.isWhitespace)
        else {
            throw refuse(.badRequest, "Missing message: send the text in the form field 'data'.")
        }
        guard data.utf8.count <= maximumMessageSize else {
            throw refuse(.contentTooLarge, "Message too long: at most \(maximumMessageSize) bytes, got \(data.utf8.count).")
        }
        if let problem = MessageText.problem(with: data) {
            throw refuse(.badRequest, "Invalid message: \(problem).")
        }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: fields.last(where: { $0.name == "channel" })?.value ?? ChannelName.fallback.rawValue)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).")
        }
        let identity = identities.identity(cookies: request.headers[values: .cookie])
        if let refusal = RoomPolicy.postingRefusal(for: channel, identity: identity) {
            throw refuse(refusal.status, refusal.message)
        }
        let givenName = fields.last(where: { $0.name == "name" })?.value
        if let givenName, let problem = SenderName.problem(with: givenName) {
            throw refuse(.badRequest, "Invalid name: \(problem).")
        }
        var options = PublishOptions(mayCreateChannel: gatekeeper.mayCreateChannel(from: client))
        let key = request.headers[Self.idempotencyKeyHeader]
        if let key {
            guard IdempotencyKey.isValid(key) else {
                throw refuse(.badRequest, "Invalid Idempotency-Key: 1–\(IdempotencyKey.maximumLength) characters of A–Z a–z 0–9 _ -.")
            }
            // A key is the sender's own: a browser's identity, else its address.
            options.idempotencyKey = (identity ?? "address:\(client)") + "|" + key
        }
        let publication: Publication
        do {
            let started = NIODeadline.now()
            publication = try await broker.publish(ByteBuffer(string: data), name: SenderName.normalized(givenName), to: channel, options: options)
            metrics.published(inNanoseconds: (NIODeadline.now() - started).nanoseconds)
        } catch let error as BrokerError {
            switch error.kind {
            case .unavailable:
                var refusal = refuse(.serviceUnavailable, "Message not sent: \(error.message). Nothing was published; try again shortly.", level: .warning)
                refusal.headers[.retryAfter] = "1"
                throw refusal
            case .unconfirmed:
                let retry = key == nil
                    ? "Before sending it again, check the channel; send an Idempotency-Key header to make such retries safe."
                    : "Retry with the same Idempotency-Key: it is published once either way."
                var refusal = refuse(.gatewayTimeout, "The message may have been published: \(error.message) in time. \(retry)", reason: "unconfirmed", level: .warning)
                refusal.headers[.retryAfter] = "1"
                throw refusal
            case .newChannelRefused:
                let tooMany = gatekeeper.tooManyNewChannels()
                var refusal = refuse(.tooManyRequests, tooMany.message, reason: "new_channels")
                refusal.headers[.retryAfter] = tooMany.retryAfter
                throw refusal
            case .failed:
                throw refuse(.internalServerError, "Message not sent: \(error.message).", level: .error)
            }
        }
        if publication.createdChannel { gatekeeper.tookNewChannel(from: client) }
        let message = publication.message
        if let identity, !publication.isRepeat { await notify(about: message, from: identity, context: context) }
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
