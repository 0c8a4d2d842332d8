import Chat
import ChatArchive
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `GET /history?channel=C&since=N&limit=L`: a channel's kept messages as JSON.
///
/// With `since`, the messages after that offset, oldest first; with `before`, the newest
/// `limit` before that offset; without either, the newest `limit`. `epoch` reads an older
/// epoch (from the archive). With an archive, a page past the broker's window is read
/// from it (``page(_:epoch:after:before:limit:)``). `limit` defaults to 100 and is capped at 1000. The messages are the same
/// envelopes a chat.v1 socket receives.
///
/// An answer holds at most ``maximumBytes`` of messages (at least one): past that it
/// ends early, and the client asks again after the last offset it got. The broker is
/// read in pages of ``page`` messages, so neither a reader nor Redis' reply holds more
/// than that at once, and the answer goes out in chunks as the client reads it.
///
/// Reading needs what a socket on the channel needs: the connect token with
/// `--connect-secret`, and for a one-to-one room or an inbox, its people.
struct HistoryController: Sendable {
    let broker: any Broker
    let gatekeeper: Gatekeeper
    let refusals: Refusals
    let identities: Identities
    /// Most bytes of messages in one answer.
    let maximumBytes: Int
    /// Bans: a banned person may not read the room.
    var moderations = RoomModerations()
    /// Every message kept for good, read past the broker's window; `nil` without one.
    var archive: (any Archive)?
    static let defaultLimit = 100
    static let maximumLimit = 1000
    /// Most messages read from the broker at once.
    static let page = 100
    /// Messages in the first read; later reads are sized by the bytes still allowed.
    static let firstPage = 20
    /// The `--max-history-bytes` default: 1 MiB.
    static let defaultMaximumBytes = 1 << 20

    func addRoutes(to router: Router<ChatRequestContext>) {
        router.get("/history") { request, context in try await self.history(request, context: context) }
        router.get("/search") { request, context in try await self.search(request, context: context) }
        for path in ["/history", "/search"] {
            router.on(RouterPath(path), method: .options) { request, _ in
                Response(status: .noContent, headers: gatekeeper.corsHeaders(origin: request.headers[.origin]))
            }
        }
    }

    /// A reader of a channel let in: the request's query, its room, and how to refuse it.
    struct Reader {
        var channel: ChannelName
        var query: [(name: String, value: String)]
        var cors: HTTPFields
        var refuse: (HTTPResponse.Status, String, String?, Logger.Level) -> Refusal

        func field(_ name: String) -> String? { query.last { $0.name == name }?.value }
    }

    /// What a read of a channel needs, as a socket on it would (`route`: `/history` or
    /// `/search`, which share the address's allowance): the allowance, a valid channel,
    /// the token, a room that is the reader's to read, no ban.
    func admit(_ request: Request, context: ChatRequestContext, route: String, what: String) async throws -> Reader {
        let cors = gatekeeper.corsHeaders(origin: request.headers[.origin])
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        let refuse = { (status: HTTPResponse.Status, message: String, reason: String?, level: Logger.Level) -> Refusal in
            refusals.record(
                "Refused a \(what)", route: route, reason: reason ?? ChatMetrics.reason(status: status.code), client: client,
                logger: context.logger, level: level, metadata: ["status": "\(status.code)", "reason": "\(message)"]
            )
            return Refusal(status, message, headers: cors)
        }
        let bearer = Gatekeeper.bearerToken(request.headers[.authorization])
        let trusted = gatekeeper.isTrustedIntegration(bearer: bearer)
        if !trusted, let wait = gatekeeper.takeHistoryRead(from: client) {
            let tooMany = Gatekeeper.tooMany("history reads", rate: gatekeeper.settings.historyRate, wait: wait)
            var refusal = refuse(.tooManyRequests, tooMany.message, nil, .info)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            throw refusal
        }
        let query: [(name: String, value: String)]
        do {
            query = try request.uri.query.map { query throws(FormError) in try FormData.pairs(query[...]) } ?? []
        } catch {
            throw refuse(.badRequest, error.message, nil, .info)
        }
        func field(_ name: String) -> String? { query.last { $0.name == name }?.value }
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: field("channel") ?? ChannelName.fallback.rawValue)
        } catch {
            throw refuse(.badRequest, "Invalid channel name: \(error.reason).", nil, .info)
        }
        let token = trusted ? field("token") : bearer ?? field("token")
        let signIn: SignIn?
        switch await gatekeeper.requestSignIn(token, channel: channel) {
        case .success(let person): signIn = person
        case .failure(let refusal):
            var error = refuse(refusal.status, refusal.message, nil, .info)
            error.headers[.wwwAuthenticate] = refusal.headers[.wwwAuthenticate]
            throw error
        }
        let identity = signIn?.identity ?? identities.identity(cookies: request.headers[values: .cookie])
        if let refusal = signIn?.refusal(for: channel) ?? RoomPolicy.refusal(for: channel, identity: identity) {
            throw refuse(refusal.status, refusal.message, nil, .info)
        }
        if let identity {
            do {
                if try await moderations.room(of: channel, from: broker).isBanned(identity, now: RoomModeration.now) {
                    throw refuse(.forbidden, RoomModeration.bannedWords, "banned", .info)
                }
            } catch let error as BrokerError {
                var refusal = refuse(.serviceUnavailable, "History unavailable: \(error.message).", nil, .warning)
                refusal.headers[.retryAfter] = "1"
                throw refusal
            }
        }
        return Reader(channel: channel, query: query, cors: cors, refuse: refuse)
    }

    func history(_ request: Request, context: ChatRequestContext) async throws -> Response {
        let reader = try await admit(request, context: context, route: "/history", what: "history request")
        let channel = reader.channel
        let cors = reader.cors
        func field(_ name: String) -> String? { reader.field(name) }
        func refuse(_ status: HTTPResponse.Status, _ message: String, reason: String? = nil, level: Logger.Level = .info) -> Refusal {
            reader.refuse(status, message, reason, level)
        }
        var since: Int64?
        if let text = field("since") {
            guard let value = Offset.parse(text) else {
                throw refuse(.badRequest, "since must be a whole number from 0 to \(Offset.maximum).")
            }
            since = value
        }
        var limit = Self.defaultLimit
        if let text = field("limit") {
            guard let value = Offset.parse(text), value > 0 else {
                throw refuse(.badRequest, "limit must be a whole number ≥ 1 (at most \(Self.maximumLimit) are returned).")
            }
            limit = Int(min(value, Int64(Self.maximumLimit)))
        }
        var before: Int64?
        if let text = field("before") {
            guard let value = Offset.parse(text), value > 0 else {
                throw refuse(.badRequest, "before must be a whole number from 1 to \(Offset.maximum): the messages before that offset are read.")
            }
            before = value
        }
        var epoch: String?
        if let text = field("epoch") {
            guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy({ $0 < 128 && (Character(UnicodeScalar($0)).isLetter || Character(UnicodeScalar($0)).isNumber) }) else {
                throw refuse(.badRequest, "epoch must be 1–64 letters and digits, as a message's epoch is.")
            }
            epoch = text
        }
        let answer: Answer
        do {
            // The plain read (the original's), unless a page of the archive or backwards is asked.
            if before == nil, epoch == nil, archive == nil {
                answer = try await read(channel, after: since, limit: limit)
            } else {
                let (wanted, after, below, most) = (epoch, since, before, limit)
                answer = try await ArchiveDeadline.within { try await self.page(channel, epoch: wanted, after: after, before: below, limit: most) }
            }
        } catch let error as BrokerError {
            var refusal = refuse(.serviceUnavailable, "History unavailable: \(error.message).", level: .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        } catch let error as ArchiveError {
            var refusal = refuse(.serviceUnavailable, "The archive is unavailable: \(error.description).", level: .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        } catch where !(error is Refusal) {
            // A driver's error (a pool that cannot connect, SQL state): its words are for
            // the log, not for the reader.
            var refusal = refuse(.serviceUnavailable, "The archive is unavailable: its database does not answer. Retry in a moment.", level: .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        var headers = cors
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        let chunks = answer.json()
        headers[.contentLength] = String(chunks.reduce(0) { $0 + $1.readableBytes })
        return Response(status: .ok, headers: headers, body: .init(contentsOf: chunks))
    }

    /// What one answer holds: the channel's state and its messages' JSON, oldest first.
    struct Answer {
        var history: History
        var messages: [ByteBuffer]
        /// With an archive, when the answer begins at its epoch's first message (or the
        /// channel has none now): the epoch kept before it, where "Load earlier" goes on.
        var previousEpoch: String? = nil

        /// The answer's JSON in chunks of about 64 KB.
        func json() -> [ByteBuffer] {
            var json = ByteBuffer()
            json.writeStaticString(#"{"channel":"#)
            JSON.writeString(history.channel.rawValue, into: &json)
            json.writeStaticString(#","epoch":"#)
            if let epoch = history.epoch { JSON.writeString(epoch, into: &json) } else { json.writeStaticString("null") }
            json.writeString(#","lastOffset":\#(history.lastOffset),"firstOffset":"#)
            json.writeString(history.firstOffset.map(String.init) ?? "null")
            if let previousEpoch {
                json.writeStaticString(#","previousEpoch":"#)
                JSON.writeString(previousEpoch, into: &json)
            }
            json.writeStaticString(#","messages":["#)
            var chunks: [ByteBuffer] = []
            for (index, var message) in messages.enumerated() {
                if index > 0 { json.writeStaticString(",") }
                json.writeBuffer(&message)
                if json.readableBytes >= 1 << 16 {
                    chunks.append(json)
                    json = ByteBuffer()
                }
            }
            json.writeStaticString("]}")
            chunks.append(json)
            return chunks
        }
    }

    /// Reads up to `limit` messages after `offset` (or the newest), in pages, until the
    /// answer would pass ``maximumBytes``.
    func read(_ channel: ChannelName, after offset: Int64?, limit: Int) async throws -> Answer {
        var bytes = 0
        var frames: [ByteBuffer] = []
        /// How many to read next: no more than the bytes left can hold, judged by the
        /// messages read so far, so a history of large messages is not read in bulk.
        func wanted() -> Int {
            let left = limit - frames.count
            guard !frames.isEmpty else { return max(1, min(Self.firstPage, left)) }
            let average = max(1, bytes / frames.count)
            return max(1, min(Self.page, left, (maximumBytes - bytes) / average + 1))
        }
        /// Takes `message` if it fits; `false` when the answer is full.
        func take(_ message: Message) -> Bool {
            var frame = ByteBuffer()
            ChatV1.writeMessage(message, into: &frame)
            guard frames.isEmpty || bytes + frame.readableBytes <= maximumBytes else { return false }
            bytes += frame.readableBytes
            frames.append(frame)
            return frames.count < limit
        }
        if let offset {
            var state: History?
            var cursor = offset
            reading: while frames.count < limit {
                let wanted = wanted()
                let page = try await broker.history(of: channel, after: cursor, limit: wanted)
                if let known = state?.epoch, page.epoch != known { break }
                state = page
                for message in page.messages {
                    cursor = message.offset
                    guard take(message) else { break reading }
                }
                guard page.messages.count == wanted, cursor < page.lastOffset else { break }
            }
            guard var history = state else { throw BrokerError(.failed, "no history was read") }
            history.messages = []
            return Answer(history: history, messages: frames)
        }
        // The newest: pages backwards from the end, reversed at the end.
        var history = try await broker.history(of: channel, after: nil, limit: wanted())
        var oldest = history.messages.first?.offset
        var full = false
        for message in history.messages.reversed() where !full { full = !take(message) }
        while !full, let before = oldest, let first = history.firstOffset, before > first {
            let after = max(first - 1, before - 1 - Int64(wanted()))
            let older = try await broker.history(of: channel, after: after, limit: Int(before - 1 - after))
            guard older.epoch == history.epoch else { break }
            let earlier = older.messages.filter { $0.offset < before }
            guard let start = earlier.first else { break }
            for message in earlier.reversed() where !full { full = !take(message) }
            oldest = start.offset
        }
        history.messages = []
        return Answer(history: history, messages: frames.reversed())
    }
}
