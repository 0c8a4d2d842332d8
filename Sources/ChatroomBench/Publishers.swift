import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Hands out message numbers to publishers and counts what came back.
final class PublishPlan: Sendable {
    struct State {
        var next: UInt64 = 1
        var acknowledged: UInt64 = 0
        var refused: UInt64 = 0
    }

    let total: UInt64
    let channels: [String]
    let padding: String
    let deadline: UInt64
    /// Messages per second for all publishers together; `nil`: as fast as answered.
    let rate: Double?
    private let start = monotonicNanoseconds()
    private let state = NIOLockedValueBox(State())
    private let stopped = NIOLockedValueBox(false)

    /// Hands out no more numbers (for a flood that lasts as long as the measured run).
    func stop() { stopped.withLockedValue { $0 = true } }

    init(total: UInt64, channels: [String], padding: Int, deadline: UInt64, rate: Double? = nil) {
        self.total = total
        self.channels = channels
        self.padding = String(repeating: "p", count: padding)
        self.deadline = deadline
        self.rate = rate
    }

    /// The next message number and when it is due (monotonic ns), or nil when all are
    /// handed out or time is up.
    func take() -> (number: UInt64, due: UInt64)? {
        guard monotonicNanoseconds() < deadline, !stopped.withLockedValue({ $0 }) else { return nil }
        return state.withLockedValue { state in
            guard state.next <= total else { return nil }
            defer { state.next += 1 }
            let due = rate.map { start + UInt64(Double(state.next - 1) / $0 * 1e9) } ?? 0
            return (state.next, due)
        }
    }

    func answered(ok: Bool) {
        state.withLockedValue { ok ? ($0.acknowledged += 1) : ($0.refused += 1) }
    }

    var snapshot: State { state.withLockedValue { $0 } }
}

/// One keep-alive HTTP/1.1 connection posting to /send/ back to back, `depth`
/// requests at a time (more than one: pipelined).
final class PublisherHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let plan: PublishPlan
    private let host: String
    private let id: Int
    private let done: EventLoopPromise<Void>
    private let path: String
    private let depth: Int
    private var status: HTTPResponseStatus = .ok
    private var inFlight = 0
    private var finished = false

    init(id: Int, plan: PublishPlan, host: String, path: String = "/send/", depth: Int = 1, done: EventLoopPromise<Void>) {
        self.id = id
        self.plan = plan
        self.host = host
        self.path = path
        self.depth = max(1, depth)
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        for _ in 0..<depth { sendNext(context: context) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body:
            break
        case .end:
            inFlight -= 1
            // Any 2xx: nchan answers 201 or 202 where Chatroom answers 200.
            plan.answered(ok: (200..<300).contains(status.code))
            sendNext(context: context)
        }
    }

    private func sendNext(context: ChannelHandlerContext) {
        guard !finished else { return }
        guard let (number, due) = plan.take() else {
            // The last answers in flight are waited for.
            guard inFlight == 0 else { return }
            finished = true
            done.succeed()
            context.close(promise: nil)
            return
        }
        inFlight += 1
        let now = monotonicNanoseconds()
        if due > now {
            // At a fixed rate: wait until the message is due.
            context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(due - now))) {
                self.post(number, context: context)
            }
        } else {
            post(number, context: context)
        }
    }

    private func post(_ number: UInt64, context: ChannelHandlerContext) {
        let channel = plan.channels[Int(number) % plan.channels.count]
        // data = "n=<number> t=<monotonic ns> p=<publisher> <padding>", form-encoded.
        let body = "data=n%3D\(number)+t%3D\(monotonicNanoseconds())+p%3D\(id)+\(plan.padding)&channel=\(channel)"
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        head.headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.succeed()
    }
}

/// Runs `connections` publishers until the plan is exhausted; `source` binds them to a
/// loopback address of their own (the server then sees another client address).
func runPublishers(
    group: any EventLoopGroup, host: String, port: Int, connections: Int, plan: PublishPlan, source: String? = nil, firstID: Int = 0,
    path: String = "/send/", depth: Int = 1
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for id in firstID..<(firstID + connections) {
            tasks.addTask {
                let loop = group.next()
                let done = loop.makePromise(of: Void.self)
                var bootstrap = ClientBootstrap(group: loop)
                if let source { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0)) }
                _ = try await bootstrap
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            try channel.pipeline.syncOperations.addHandler(PublisherHandler(id: id, plan: plan, host: host, path: path, depth: depth, done: done))
                        }
                    }
                    .connect(host: host, port: port).get()
                try await done.futureResult.get()
            }
        }
        try await tasks.waitForAll()
    }
}
