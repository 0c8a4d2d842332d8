import Chat
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `GET /history?channel=C&since=N&limit=L`: a channel's kept messages as JSON.
///
/// With `since`, the messages after that offset, oldest first; without it, the newest
/// `limit`. `limit` defaults to 100 and is capped at 1000. The messages are the same
/// envelopes a chat.v1 socket receives.
struct HistoryController: Sendable {
    let broker: any Broker
    let gatekeeper: Gatekeeper
    var metrics: ChatMetrics = .none
    let identities: Identities
    static let defaultLimit = 100
    static let maximumLimit = 1000

    func addRoutes(to router: Router<ChatRequestContext>) {
        router.get("/history") { request, context in try await self.history(request, context: context) }
    }

    func history(_ request: Request, context: ChatRequestContext) async throws -> Response {
        let cors = gatekeeper.corsHeaders(origin: request.headers[.origin])
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        if let wait = gatekeeper.takeHistoryRead(from: client) {
            let tooMany = Gatekeeper.tooMany("history reads", rate: gatekeeper.settings.historyRate, wait: wait)
            var refusal = refuse(.tooManyRequests, tooMany.message, cors, client: client, context: context)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            throw refusal
        }
        let query = request.uri.query.map { FormData.pairs($0[...]) } ?? []
        func field(_ name: String) -> String? { query.last { $0.name == name }?.value }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: field("channel") ?? ChannelName.fallback.rawValue)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).", cors, client: client, context: context)
        }
        let identity = identities.identity(cookies: request.headers[values: .cookie])
        if let reason = RoomPolicy.refusal(for: channel, identity: identity) {
            throw refuse(.forbidden, reason, cors, client: client, context: context)
        }
        var since: Int64?
        if let text = field("since") {
            guard let value = Int64(text), value >= 0 else {
                throw refuse(.badRequest, "since must be a whole number ≥ 0.", cors, client: client, context: context)
            }
            since = value
        }
        var limit = Self.defaultLimit
        if let text = field("limit") {
            guard let value = Int(text), value > 0 else {
                throw refuse(.badRequest, "limit must be a whole number ≥ 1 (at most \(Self.maximumLimit) are returned).", cors, client: client, context: context)
            }
            limit = min(value, Self.maximumLimit)
        }
        let history: History
        do {
            history = try await broker.history(of: channel, after: since, limit: limit)
        } catch let error as BrokerError {
            var refusal = refuse(.serviceUnavailable, "History unavailable: \(error.message).", cors, client: client, context: context)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        var json = ByteBuffer()
        json.writeStaticString(#"{"channel":"#)
        JSON.writeString(channel.rawValue, into: &json)
        json.writeStaticString(#","epoch":"#)
        if let epoch = history.epoch { JSON.writeString(epoch, into: &json) } else { json.writeStaticString("null") }
        json.writeString(#","lastOffset":\#(history.lastOffset),"firstOffset":"#)
        json.writeString(history.firstOffset.map(String.init) ?? "null")
        json.writeStaticString(#","messages":["#)
        for (index, message) in history.messages.enumerated() {
            if index > 0 { json.writeStaticString(",") }
            ChatV1.writeMessage(message, into: &json)
        }
        json.writeStaticString("]}")
        var headers = cors
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: json))
    }

    private func refuse(_ status: HTTPResponse.Status, _ message: String, _ cors: HTTPFields, client: String, context: ChatRequestContext) -> PlainTextError {
        metrics.refused(route: "/history", reason: ChatMetrics.reason(status: status.code))
        context.logger.info("Refused a history request", metadata: ["status": "\(status.code)", "reason": "\(message)", "client": "\(client)"])
        return PlainTextError(status: status, message: message, headers: cors)
    }
}
