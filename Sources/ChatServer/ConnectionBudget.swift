#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// How many connections the server holds at once, so that it refuses the one too many
/// with a clear answer instead of running out of file descriptors.
///
/// A process out of descriptors cannot even accept a connection to refuse it: the
/// kernel's queue fills and clients time out with no word why, while the server's
/// Redis reconnects and page loads fail too. So the server stops short of the limit:
/// past `limit` a new connection is answered `503` with a message and closed, and a
/// line is logged (at most once a second, with how many were refused meanwhile).
final class ConnectionBudget: Sendable {
    /// Connections allowed at once.
    let limit: Int
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    private struct State {
        var open = 0
        var refusedSinceLog = 0
        var lastLog: NIODeadline?
    }

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    /// Connections open now.
    var open: Int { state.withLockedValue { $0.open } }

    /// Counts `channel` in until it closes; `false` (and a log line) if the budget is spent.
    func admit(_ channel: any Channel) -> Bool {
        let (admitted, report) = state.withLockedValue { state -> (Bool, Int?) in
            if state.open < limit {
                state.open += 1
                return (true, nil)
            }
            state.refusedSinceLog += 1
            let now = NIODeadline.now()
            guard state.lastLog.map({ now - $0 >= .seconds(1) }) ?? true else { return (false, nil) }
            state.lastLog = now
            defer { state.refusedSinceLog = 0 }
            return (false, state.refusedSinceLog)
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in self.state.withLockedValue { $0.open -= 1 } }
        } else if let report {
            logger.warning(
                "Refusing connections: the server holds as many as it may (--max-connections)",
                metadata: ["limit": "\(limit)", "refused": "\(report)", "peer": "\(channel.remoteAddress?.description ?? "?")"]
            )
        }
        return admitted
    }

    /// Descriptors kept for everything that is not a client: the listening socket, Redis
    /// connections, files, and some slack.
    static let reserve = 100

    /// The default limit: the process's open-file limit less ``reserve``.
    static func defaultLimit() -> Int {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return 1024 - reserve }
        // RLIM_INFINITY is the largest value: capped like any other.
        return max(1, Int(min(UInt64(limit.rlim_cur), UInt64(Int32.max))) - reserve)
    }

    /// Answers a connection over the budget: `503` with a message, then closes.
    ///
    /// The answer goes out once the request starts to arrive (or after two seconds of
    /// silence), and the rest of the request is read and thrown away until the client
    /// hangs up: answering before the client has written, or closing with unread
    /// input, can reset the connection before the client reads the answer.
    final class Refusal: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private let limit: Int
        private var answered = false

        init(limit: Int) {
            self.limit = limit
        }

        func handlerAdded(context: ChannelHandlerContext) {
            let channel = context.channel
            context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) {
                self.answer(context: context)
                context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            answer(context: context)
        }

        private func answer(context: ChannelHandlerContext) {
            guard !answered, context.channel.isActive else { return }
            answered = true
            let body = "The server is full: it holds \(limit) connections, its limit. Try again shortly, or another server.\n"
            let response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nRetry-After: 5\r\nConnection: close\r\n\r\n" + body
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
                channel.close(mode: .output, promise: nil)
            }
        }
    }
}
