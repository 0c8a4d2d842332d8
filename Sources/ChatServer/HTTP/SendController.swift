import Chat
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

    /// The original's CORS headers, on every answer.
    static let corsHeaders: HTTPFields = [
        .accessControlAllowOrigin: "*",
        .accessControlAllowHeaders: "x-requested-with",
        .accessControlAllowMethods: "POST,GET,PUT,DELETE",
    ]

    func addRoutes(to router: Router<BasicRequestContext>) {
        // Hummingbird's router ignores a trailing slash: this serves /send/ and /send.
        router.post("/send/") { request, context in try await self.send(request, context: context) }
        router.on("/send/", method: .options) { _, _ in
            Response(status: .noContent, headers: Self.corsHeaders)
        }
    }

    func send(_ request: Request, context: BasicRequestContext) async throws -> Response {
        var request = request
        let fields: [(name: String, value: String)]
        do {
            fields = try await Self.fields(of: &request, limit: bodyLimit)
        } catch {
            throw refuse(.contentTooLarge, "The request body is larger than \(bodyLimit) bytes.", context: context)
        }
        guard let data = fields.last(where: { $0.name == "data" })?.value,
            !data.unicodeScalars.allSatisfy(\.properties.isWhitespace)
        else {
            throw refuse(.badRequest, "Missing message: send the text in the form field 'data'.", context: context)
        }
        guard data.utf8.count <= maximumMessageSize else {
            throw refuse(.contentTooLarge, "Message too long: at most \(maximumMessageSize) bytes, got \(data.utf8.count).", context: context)
        }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: fields.last(where: { $0.name == "channel" })?.value ?? ChannelName.fallback.rawValue)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).", context: context)
        }
        do {
            _ = try await broker.publish(ByteBuffer(string: data), to: channel)
        } catch let error as BrokerError {
            switch error.kind {
            case .unavailable:
                var refusal = refuse(.serviceUnavailable, "Message not sent: \(error.message). Try again shortly.", context: context, level: .warning)
                refusal.headers[.retryAfter] = "1"
                throw refusal
            case .failed:
                throw refuse(.internalServerError, "Message not sent: \(error.message).", context: context, level: .error)
            }
        }
        var headers = Self.corsHeaders
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "ok")))
    }

    /// Room for the largest message percent-encoded, plus the other fields.
    private var bodyLimit: Int { maximumMessageSize * 3 + 16 * 1024 }

    private func refuse(
        _ status: HTTPResponse.Status,
        _ message: String,
        context: BasicRequestContext,
        level: Logger.Level = .info
    ) -> PlainTextError {
        context.logger.log(level: level, "Refused a message", metadata: ["status": "\(status.code)", "reason": "\(message)"])
        return PlainTextError(status: status, message: message, headers: Self.corsHeaders)
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
