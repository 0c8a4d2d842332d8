import Chat
import ChatArchive
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `GET /search?channel=C&q=WORDS[&limit=N]`: the archived messages of a channel with
/// every word of `q`, newest first, as `{"channel":C,"messages":[…]}` (the messages of
/// `/history`), with `/history`'s rules and allowance.
extension HistoryController {
    static let defaultSearchLimit = 20
    static let maximumSearchLimit = 100
    /// Most bytes of `q`.
    static let maximumSearchBytes = 256

    func search(_ request: Request, context: ChatRequestContext) async throws -> Response {
        let reader = try await admit(request, context: context, route: "/search", what: "search")
        guard let archive else {
            throw reader.refuse(.notFound, "Search needs the archive: start the server with --archive-url (PostgreSQL or SQLite).", "disabled", .info)
        }
        guard let words = reader.field("q"), !words.unicodeScalars.allSatisfy(\.properties.isWhitespace) else {
            throw reader.refuse(.badRequest, "Missing q: the words to search for.", nil, .info)
        }
        guard words.utf8.count <= Self.maximumSearchBytes else {
            throw reader.refuse(.badRequest, "q is too long: at most \(Self.maximumSearchBytes) bytes.", nil, .info)
        }
        var limit = Self.defaultSearchLimit
        if let text = reader.field("limit") {
            guard let value = Offset.parse(text), value > 0 else {
                throw reader.refuse(.badRequest, "limit must be a whole number ≥ 1 (at most \(Self.maximumSearchLimit) are returned).", nil, .info)
            }
            limit = Int(min(value, Int64(Self.maximumSearchLimit)))
        }
        let found: [Message]
        do {
            let (channel, most) = (reader.channel, limit)
            found = try await ArchiveDeadline.within { try await archive.search(words, in: channel, limit: most) }
        } catch {
            let why = (error as? ArchiveError)?.description ?? "its database does not answer"
            var refusal = reader.refuse(.serviceUnavailable, "The archive is unavailable: \(why). Retry in a moment.", nil, .warning)
            refusal.headers[.retryAfter] = "1"
            throw refusal
        }
        var json = ByteBuffer()
        json.writeStaticString(#"{"channel":"#)
        JSON.writeString(reader.channel.rawValue, into: &json)
        json.writeStaticString(#","messages":["#)
        var bytes = 0
        for (index, message) in found.enumerated() {
            var frame = ByteBuffer()
            ChatV1.writeMessage(message, into: &frame)
            // At least one; no more than an answer of /history holds.
            guard index == 0 || bytes + frame.readableBytes <= maximumBytes else { break }
            bytes += frame.readableBytes
            if index > 0 { json.writeStaticString(",") }
            json.writeBuffer(&frame)
        }
        json.writeStaticString("]}")
        var headers = reader.cors
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        headers[.contentLength] = String(json.readableBytes)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: json))
    }
}
