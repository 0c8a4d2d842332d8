import HTTPTypes
import Hummingbird
import NIOCore

/// A request the server will not serve: the status it is answered with, a message a
/// person can read and, for a room a chat.v1 socket may not enter, the close code the
/// socket hears it with (browsers cannot read an upgrade's HTTP status).
struct Refusal: Error, HTTPResponseError, Sendable {
    var status: HTTPResponse.Status
    var message: String
    var headers: HTTPFields = [:]
    /// How a chat.v1 socket is told, after its upgrade; `nil`: answered in HTTP only.
    var closeCode: WebSocketCloseCode?
    /// When a timed refusal (a ban for some time) ends, Unix ms; a chat.v2 `refused`
    /// frame carries it, so that a page can say until when.
    var until: Int64?

    init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:], closeCode: WebSocketCloseCode? = nil) {
        self.status = status
        self.message = message
        self.headers = headers
        self.closeCode = closeCode
    }

    /// The answer: the message as plain text.
    func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
    }
}
