import Chat
import HTTPTypes

/// What a `GET /events` request asks for, read from its head alone: the channels, where
/// the stream stood (`Last-Event-ID`, else the `lastEventId` query field), the token and
/// the name. Nothing here needs the broker.
struct EventStreamRequest: Sendable, Equatable {
    /// The `channel` fields in the order given, each once (names unchecked).
    var channels: [String]
    /// Where a stream that is reconnecting stood; no entries for a new one.
    var position: EventStreamPosition
    /// The connect token or JWT: `Authorization: Bearer`, else the `token` field.
    var token: String?
    /// The `name` field, unchecked.
    var name: String?

    /// Whether `path` is the route (`/events`, or `/events/`).
    static func isRoute(_ path: some StringProtocol) -> Bool {
        path == "/events" || path == "/events/"
    }

    /// Reads the request; a refusal (400) says what is wrong with it.
    static func read(query rawQuery: Substring?, lastEventID: String?, authorization: String?, maximumChannels: Int) -> Result<Self, Refusal> {
        let query: [(name: String, value: String)]
        do {
            query = try rawQuery.map { query throws(FormError) in try FormData.pairs(query) } ?? []
        } catch {
            return .failure(Refusal(.badRequest, error.message))
        }
        func field(_ name: String) -> String? { query.last { $0.name == name }?.value }
        var channels: [String] = []
        for pair in query where pair.name == "channel" && !channels.contains(pair.value) {
            channels.append(pair.value)
        }
        guard !channels.isEmpty else {
            return .failure(Refusal(.badRequest, "Name at least one channel: /events?channel=NAME (the field may repeat)."))
        }
        guard channels.count <= maximumChannels else {
            return .failure(
                Refusal(.badRequest, "Too many channels: one stream carries at most \(maximumChannels) (--max-subscriptions); this request names \(channels.count).")
            )
        }
        // The header is what a browser sends when it reconnects by itself: the newest.
        let positionText = lastEventID ?? field("lastEventId") ?? ""
        let position: EventStreamPosition
        do {
            position = try EventStreamPosition(parsing: positionText)
        } catch {
            let which = lastEventID == nil ? "lastEventId" : "Last-Event-ID"
            return .failure(Refusal(.badRequest, "Invalid \(which): \(error.description). Send back the id of the last event received, as it came."))
        }
        let token = Gatekeeper.bearerToken(authorization) ?? field("token")
        return .success(EventStreamRequest(channels: channels, position: position, token: token, name: field("name")))
    }
}
