import Logging
import NIOCore
import NIOHTTP1

/// Answers a request NIO's HTTP parser refused, at once, then closes the connection.
///
/// Without it a client that sends a bad `Content-Length`, both `Content-Length` and
/// `Transfer-Encoding`, a folded or NUL-bearing header, or a head larger than NIO takes,
/// heard nothing until the request deadline. Now: `431` for a head too large, `400`
/// for the rest, each with a message, a counted refusal and a (throttled) log line.
/// Sits after the HTTP decoder, before the upgrade handler.
final class MalformedRequestAnswer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let refusals: Refusals
    private let logger: Logger
    private var answered = false

    init(refusals: Refusals, logger: Logger) {
        self.refusals = refusals
        self.logger = logger
    }

    /// The server ends the input itself: the parse error that follows is not the client's.
    func expectEndOfInput() {
        answered = true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !answered else { return }
        answered = true
        // Answers to the requests before it come first: their messages may be published.
        let route = try? context.pipeline.syncOperations.handler(type: SendRoute.self)
        guard let route else { return answer(parserError, context: context) }
        // A router's request the error breaks off does nothing with the part it got.
        route.cutRouterRequestShort(parserError)
        route.whenAnswered { [self] in answer(parserError, context: context) }
    }

    private func answer(_ parserError: HTTPParserError, context: ChannelHandlerContext) {
        let (status, message) = Self.answer(to: parserError)
        refusals.record(
            "Refused a malformed HTTP request", route: "connection", reason: "malformed",
            client: context.channel.remoteAddress?.ipAddress ?? "unknown", logger: logger,
            metadata: ["status": "\(status.code)", "error": "\(parserError)"]
        )
        let body = ByteBuffer(string: message + "\n")
        let head = HTTPResponseHead(
            version: .http1_1, status: status,
            headers: ["Content-Type": "text/plain; charset=utf-8", "Content-Length": String(body.readableBytes), "Connection": "close"]
        )
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The status and words for a parser error.
    static func answer(to error: HTTPParserError) -> (HTTPResponseStatus, String) {
        switch error {
        case .headerOverflow:
            (.requestHeaderFieldsTooLarge, "The request's head is too large.")
        case .invalidContentLength, .unexpectedContentLength:
            (.badRequest, "The request's Content-Length is not valid (or comes with a Transfer-Encoding).")
        case .invalidHeaderToken, .lfExpected, .invalidConstant, .strictModeAssertion, .invalidCharactersUsed:
            (.badRequest, "The request's head is malformed: each header is one 'Name: value' line ending in CR LF.")
        default:
            (.badRequest, "The request is not valid HTTP/1.1 (\(error)).")
        }
    }
}
