#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import HTTPTypes
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes

/// How many connections the server holds at once, and how many of them one address may
/// hold, so that it refuses the one too many with a clear answer instead of running out
/// of file descriptors, and no one address can take every place.
///
/// A process out of descriptors cannot even accept a connection to refuse it: the
/// kernel's queue fills and clients time out with no word why, while the server's
/// Redis reconnects and page loads fail too. So the server stops short of the limit.
///
/// - Past `limit`, a new connection first takes the place of an idle keep-alive
///   connection (the longest idle is closed); only when none is idle is it answered
///   `503` and closed. While the server holds more than ``pressure`` of its limit,
///   keep-alive connections idle for ``idleUnderPressure`` are closed too.
/// - Past `limitPerAddress` plain HTTP connections from one peer address (WebSockets
///   are counted apart, by `--max-sockets-per-address`), a new one is answered `429`.
///   Trusted proxies are exempt: every client behind them shares their address.
///
/// - Sockets take at most `limit` less `httpReserve` places: the rest is kept for plain
///   HTTP, so that with the server full of sockets `POST /send/` (the one message meant
///   for all of them), `/history`, `/healthz`, `/readyz` and `/metrics` still answer. One
///   more socket is refused `503` before its upgrade.
///
/// Refusals are logged at most once a second, with how many were refused meanwhile.
final class ConnectionBudget: Sendable {
    /// Connections allowed at once.
    let limit: Int
    /// Places sockets may not take (`--http-reserve`).
    let httpReserve: Int
    /// Sockets allowed at once.
    var socketLimit: Int { max(0, limit - httpReserve) }
    /// Plain HTTP connections one peer address may hold.
    let limitPerAddress: Int
    private let trustedProxies: TrustedProxies
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    /// The `--max-connections-per-address` default.
    static let defaultLimitPerAddress = 64
    /// The share of the limit past which idle keep-alive connections are cut short.
    static let pressure = 0.9
    /// How long a keep-alive connection may stay idle while the server is under pressure.
    static let idleUnderPressure: TimeAmount = .seconds(5)

    private struct State {
        var open = 0
        var perAddress: [String: Int] = [:]
        /// Keep-alive connections between two requests, and since when.
        var idle: [ObjectIdentifier: (channel: any Channel, since: NIODeadline)] = [:]
        /// Connections that are sockets, or are being upgraded to one.
        var sockets: Set<ObjectIdentifier> = []
        var refusedSinceLog = 0
        var lastLog: NIODeadline?
    }

    /// What became of a new connection.
    enum Admission: Equatable {
        case admitted
        /// The server is full.
        case full
        /// Its address holds as many connections as it may.
        case tooManyFromAddress
    }

    init(limit: Int, httpReserve: Int? = nil, limitPerAddress: Int = defaultLimitPerAddress, trustedProxies: TrustedProxies = .none, logger: Logger) {
        self.limit = limit
        self.httpReserve = min(limit, httpReserve ?? Self.defaultHTTPReserve(limit: limit))
        self.limitPerAddress = limitPerAddress
        self.trustedProxies = trustedProxies
        self.logger = logger
    }

    /// Connections open now.
    var open: Int { state.withLockedValue { $0.open } }

    /// The `--http-reserve` default: 2% of the limit, at least 50 (never all of it).
    static func defaultHTTPReserve(limit: Int) -> Int {
        min(max(50, limit / 50), max(0, limit - 1))
    }

    /// Takes a socket's place for `channel` (until it closes, or ``releaseSocket(_:)``),
    /// or says why not: sockets hold all the places plain HTTP does not keep.
    func reserveSocket(_ channel: any Channel) -> ChatServer.Refusal? {
        let id = ObjectIdentifier(channel)
        let (reserved, report) = state.withLockedValue { state -> (Bool, Int?) in
            if state.sockets.contains(id) { return (true, nil) }
            guard state.sockets.count < socketLimit else { return (false, Self.report(&state, now: .now())) }
            state.sockets.insert(id)
            return (true, nil)
        }
        guard !reserved else {
            channel.closeFuture.whenComplete { _ in self.releaseSocket(channel) }
            return nil
        }
        if let report {
            logger.warning(
                "Refusing sockets: the server holds as many as it may (--max-connections less --http-reserve)",
                metadata: ["sockets": "\(socketLimit)", "refused": "\(report)"]
            )
        }
        var refusal = ChatServer.Refusal(
            .serviceUnavailable,
            "This server holds as many sockets as it may (\(socketLimit)); the rest of its connections are kept for requests. Retry later or use another server."
        )
        refusal.headers[.retryAfter] = "5"
        return refusal
    }

    /// The connection will not be a socket after all.
    func releaseSocket(_ channel: any Channel) {
        _ = state.withLockedValue { $0.sockets.remove(ObjectIdentifier(channel)) }
    }

    /// Counts `channel` in until it closes, or says why not (and logs it, throttled).
    func admit(_ channel: any Channel, now: NIODeadline = .now()) -> Admission {
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        let exempt = trustedProxies.contains(address)
        var reclaimed: [any Channel] = []
        let (admission, report) = state.withLockedValue { state -> (Admission, Int?) in
            if !exempt, state.perAddress[address, default: 0] >= limitPerAddress {
                return (.tooManyFromAddress, Self.report(&state, now: now))
            }
            if Double(state.open) >= Double(limit) * Self.pressure {
                // Under pressure: idle keep-alive connections go first.
                reclaimed = Self.takeIdle(&state, idleFor: Self.idleUnderPressure, now: now, atMost: 4)
            }
            if state.open >= limit + reclaimed.count {
                // Full: the longest-idle connection makes room, if there is one.
                reclaimed += Self.takeIdle(&state, idleFor: .zero, now: now, atMost: 1)
                guard state.open < limit + reclaimed.count else { return (.full, Self.report(&state, now: now)) }
            }
            state.open += 1
            if !exempt { state.perAddress[address, default: 0] += 1 }
            return (.admitted, nil)
        }
        for idle in reclaimed { idle.close(promise: nil) }
        if admission == .admitted {
            let id = ObjectIdentifier(channel)
            channel.closeFuture.whenComplete { _ in
                self.state.withLockedValue { state in
                    state.open -= 1
                    state.idle[id] = nil
                    if !exempt { Self.release(&state, address) }
                }
            }
        } else if let report {
            logger.warning(
                admission == .full
                    ? "Refusing connections: the server holds as many as it may (--max-connections)"
                    : "Refusing connections: an address holds as many as it may (--max-connections-per-address)",
                metadata: ["limit": "\(admission == .full ? limit : limitPerAddress)", "refused": "\(report)", "peer": "\(address)"]
            )
        }
        return admission
    }

    /// The connection became a WebSocket: it no longer counts against its address's
    /// HTTP connections (sockets have their own limit), and is never idle.
    func becameSocket(_ channel: any Channel) {
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        guard !trustedProxies.contains(address) else { return }
        state.withLockedValue { state in
            state.idle[ObjectIdentifier(channel)] = nil
            Self.release(&state, address)
        }
    }

    /// The connection answered a request and waits for the next.
    func becameIdle(_ channel: any Channel, now: NIODeadline = .now()) {
        state.withLockedValue { $0.idle[ObjectIdentifier(channel)] = (channel, now) }
    }

    /// The connection received a request.
    func becameBusy(_ channel: any Channel) {
        state.withLockedValue { _ = $0.idle.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Whether idle keep-alive connections are cut short now.
    var isUnderPressure: Bool {
        state.withLockedValue { Double($0.open) >= Double(limit) * Self.pressure }
    }

    private static func release(_ state: inout State, _ address: String) {
        guard let count = state.perAddress[address] else { return }
        state.perAddress[address] = count > 1 ? count - 1 : nil
    }

    /// Takes up to `atMost` of the connections idle for at least `idleFor`, longest idle first.
    ///
    /// One pass that keeps the `atMost` oldest seen so far: this runs under the lock on
    /// every new connection while the server is under pressure, with up to the whole
    /// limit idle, so it must not sort them all.
    private static func takeIdle(_ state: inout State, idleFor: TimeAmount, now: NIODeadline, atMost: Int) -> [any Channel] {
        var oldest: [(id: ObjectIdentifier, channel: any Channel, since: NIODeadline)] = []
        for (id, entry) in state.idle where now - entry.since >= idleFor {
            if oldest.count < atMost {
                oldest.append((id, entry.channel, entry.since))
            } else if let newest = oldest.indices.max(by: { oldest[$0].since < oldest[$1].since }), entry.since < oldest[newest].since {
                oldest[newest] = (id, entry.channel, entry.since)
            }
        }
        for entry in oldest { state.idle[entry.id] = nil }
        return oldest.map(\.channel)
    }

    /// How many were refused since the last log line, when one is due (once a second).
    private static func report(_ state: inout State, now: NIODeadline) -> Int? {
        state.refusedSinceLog += 1
        guard state.lastLog.map({ now - $0 >= .seconds(1) }) ?? true else { return nil }
        state.lastLog = now
        defer { state.refusedSinceLog = 0 }
        return state.refusedSinceLog
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

    /// Tells the budget when an HTTP connection is between requests, and closes it when
    /// it stays idle past ``idleUnderPressure`` while the server is under pressure.
    final class KeepAliveWatch: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias InboundOut = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = HTTPResponsePart
        private let budget: ConnectionBudget
        private var timer: Scheduled<Void>?
        /// Requests read and not yet answered: several, when a client pipelines them.
        private var unanswered = 0
        private var idleSince = NIODeadline.now()

        init(budget: ConnectionBudget) {
            self.budget = budget
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head = unwrapInboundIn(data) {
                unanswered += 1
                if unanswered == 1 { budget.becameBusy(context.channel) }
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data) {
                unanswered = max(0, unanswered - 1)
                if unanswered == 0 { becameIdle(context) }
            }
            context.write(data, promise: promise)
        }

        /// Idle since now. The timer is scheduled only when none is: one that finds the
        /// connection busy again, or idle for less than the timeout, waits for what is
        /// left; so keep-alive requests cost no timer each.
        private func becameIdle(_ context: ChannelHandlerContext) {
            budget.becameIdle(context.channel)
            idleSince = .now()
            if timer == nil { schedule(at: idleSince + ConnectionBudget.idleUnderPressure, context) }
        }

        private func schedule(at deadline: NIODeadline, _ context: ChannelHandlerContext) {
            timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
                timer = nil
                guard unanswered == 0 else { return }
                let due = idleSince + ConnectionBudget.idleUnderPressure
                guard NIODeadline.now() >= due else { return schedule(at: due, context) }
                // Still idle after the short timeout, and the server is under pressure.
                if budget.isUnderPressure { context.channel.close(promise: nil) }
            }
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            timer?.cancel()
        }
    }

    /// Answers a connection that cannot be admitted: `503` (or `429` for its address)
    /// with a message, then closes.
    ///
    /// The answer goes out once the request starts to arrive (or after two seconds of
    /// silence), and the rest of the request is read and thrown away until the client
    /// hangs up: answering before the client has written, or closing with unread
    /// input, can reset the connection before the client reads the answer.
    final class Refusal: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private let response: String
        private var answered = false

        init(_ admission: Admission, budget: ConnectionBudget) {
            let status: String
            let body: String
            switch admission {
            case .tooManyFromAddress:
                status = "429 Too Many Requests"
                body = "Too many connections from your address: at most \(budget.limitPerAddress) at once. Close some and try again.\n"
            default:
                status = "503 Service Unavailable"
                body = "The server is full: it holds \(budget.limit) connections, its limit. Try again shortly, or another server.\n"
            }
            response = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nRetry-After: 5\r\nConnection: close\r\n\r\n" + body
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
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
                channel.close(mode: .output, promise: nil)
            }
        }
    }
}
