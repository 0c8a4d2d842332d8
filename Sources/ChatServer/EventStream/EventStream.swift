import Chat
import HTTPTypes
import Logging
import NIOCore

/// One Server-Sent Events stream (`GET /events`): the channels of a chat.v2 socket,
/// delivered as `text/event-stream` to a client that cannot open a WebSocket.
///
/// Each channel is a ``Subscription`` (a hub member with its own ``DeliveryFlow``), as
/// on a chat.v2 socket: resume, replay, gaps and slow readers are the flow's. What is the
/// stream's own is its bytes and its position: every event with an offset carries the id
/// ``EventStreamPosition`` makes of where the stream stands in all its channels, so that a
/// browser reconnecting with `Last-Event-ID` resumes each of them without a hole or a
/// duplicate. A stream that falls behind is closed with a final `gap` (the client
/// resumes); one that goes quiet gets a `: ping` comment every ``Settings/pingInterval``.
///
/// The handler sits first in its connection's pipeline once the route
/// (``EventStreamRoute``) admitted it, writes raw bytes (the answer is delimited by the
/// connection's end), and runs on its event loop alone: no Task per stream.
final class EventStream: ChannelInboundHandler, DeliveryStream, HubConnection, SubscriptionOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the admission decided a stream opens with.
    struct Opening: Sendable {
        struct Channel: Sendable {
            var name: ChannelName
            /// Where the stream stood in it, if it is resuming.
            var resume: DeliveryFlow.Resume?
            /// The broker's join was made: the stream leaves the channel when it ends.
            var joined: Bool
        }

        var channels: [Channel]
        var person: ChatV2Socket.Person
        var signIn: SignIn?
        /// The answer's own headers (CORS, a new identity's cookie).
        var headers: HTTPFields
        var client: String
    }

    struct Settings: Sendable {
        /// Bytes that may wait before the stream counts as too slow.
        var queueLimit: Int
        /// How often an idle stream gets a comment (proxies close silent connections).
        var pingInterval: TimeAmount
        /// How long the final `gap` of a slow stream may take before the server hangs up.
        var closeTimeout: TimeAmount = .seconds(10)
    }

    var context: ChannelHandlerContext?
    /// The channels in the order of the request: the order of the position's entries.
    let order: [ChannelName]
    var subscriptions = Subscriptions()
    /// Where the stream stands in each channel, as its last id said (or will say).
    var position: [ChannelName: EventStreamPosition.Entry] = [:]
    private var opening: Opening?
    let person: ChatV2Socket.Person
    private let lease: SignInLease?
    let hub: LoopHub
    let server: ChatServerContext
    let settings: Settings
    let client: String
    let logger: Logger
    private var pinger: RepeatedTask?
    /// Neither closing nor closed.
    var isOpen = true
    /// Whether the request was `HEAD`: the head alone is answered.
    private let headOnly: Bool

    var identity: String { person.member.id }
    var flowLogger: Logger { logger }

    init(_ opening: Opening, headOnly: Bool, hub: LoopHub, server: ChatServerContext, settings: Settings, logger: Logger) {
        self.opening = opening
        self.order = opening.channels.map(\.name)
        self.person = opening.person
        self.lease = opening.signIn.map { SignInLease($0, logins: server.gatekeeper.logins) }
        self.headOnly = headOnly
        self.hub = hub
        self.server = server
        self.settings = settings
        self.client = opening.client
        self.logger = logger
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        guard let opening else { return }
        self.opening = nil
        context.channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: settings.queueLimit / 2, high: settings.queueLimit)).whenFailure { _ in }
        context.write(wrapOutboundOut(Self.head(opening.headers)), promise: nil)
        guard !headOnly else {
            for channel in opening.channels {
                if channel.joined { server.broker.leave(channel.name) }
                server.gatekeeper.releaseChannel(channel.name)
            }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            isOpen = false
            return
        }
        // Reconnect soon after a drop (the browser's default is about 3 s).
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "retry: 1000\n\n")), promise: nil)
        server.encoder.countEventStream(until: context.channel.closeFuture)
        hub.addConnection(self)
        lease?.start(on: context.eventLoop) { [weak self] in self?.tokenExpired() }
        let interval = settings.pingInterval
        // Held until the stream leaves, which cancels the task.
        let stream = NIOLoopBound(self, eventLoop: context.eventLoop)
        pinger = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            stream.value.ping()
        }
        for channel in opening.channels {
            let subscription = Subscription(channel: channel.name, resume: channel.resume, hasPresence: RoomPolicy.owner(ofInbox: channel.name) == nil, owner: self)
            subscription.joined = channel.joined
            subscriptions[channel.name] = subscription
            if let resume = channel.resume {
                position[channel.name] = EventStreamPosition.Entry(channel: channel.name, epoch: resume.epoch, offset: resume.after)
            }
            open(subscription, context: context)
        }
        logger.debug("Event stream open", metadata: ["channels": "\(order.count)", "client": "\(client)"])
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        logger.debug("Event stream closed", metadata: ["client": "\(client)"])
        context.fireChannelInactive()
    }

    /// Whatever the client sends now is not read: a stream has no requests after its own.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client hung up its side: nobody reads the stream any more.
        if case .some(.inputClosed) = event as? ChannelEvent {
            close()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("Event stream error", metadata: ["error": "\(error)"])
        close()
    }

    // MARK: - Hub connection

    func goAway() {
        close()
    }

    /// The stream keeps its own time (``Settings/pingInterval``).
    func heartbeat(now: NIODeadline) {}

    private func ping() {
        guard isOpen, let context else { return }
        context.writeAndFlush(wrapOutboundOut(EventStreamFrames.ping), promise: nil)
    }

    private func tokenExpired() {
        guard isOpen, let context else { return }
        server.refusals.record("Closing an event stream whose token expired", route: "/events", reason: "token_expired", client: client, logger: logger)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: ": Token expired: sign in again\n\n")), promise: nil)
        close()
    }

    /// Ends the stream: its subscriptions first, then the connection.
    func close() {
        guard isOpen else { return }
        isOpen = false
        let context = self.context
        leave()
        context?.close(promise: nil)
    }

    /// Leaves the hub and every channel; the connection closes apart.
    func leave() {
        guard context != nil else { return }
        isOpen = false
        context = nil
        pinger?.cancel()
        pinger = nil
        lease?.end()
        hub.removeConnection(self)
        let open = subscriptions.values
        subscriptions = Subscriptions()
        for subscription in open { end(subscription) }
    }

    /// A ban: the channel ends with `refused` 4403 (with until when, for a ban for some
    /// time); a stream left with no channel closes.
    func endBanned(_ subscription: Subscription, until: Int64, context: ChannelHandlerContext) {
        subscriptions[subscription.channel] = nil
        end(subscription)
        let refused = ChatV2.refused(
            channel: subscription.channel.rawValue, code: WebSocketCloseCode.banned.rawValue, message: RoomModeration.bannedWords, until: until > 0 ? until : nil,
            reason: "banned"
        )
        context.writeAndFlush(wrapOutboundOut(EventStreamFrames.frame(name: "refused", webSocketFrame: refused)), promise: nil)
        if subscriptions.isEmpty { close() }
    }

    /// Whether one event's own id is the stream's whole position: a stream of one channel.
    var carriesWholePosition: Bool { order.count == 1 }

    /// Takes a subscription out of the hub and the room, and gives back what it held.
    private func end(_ subscription: Subscription) {
        subscription.release(from: hub, server: server, person: person.member.id)
    }

    // MARK: - Where a subscription starts

    /// In the hub first, then where the history and the person's read state stand: what
    /// is published meanwhile waits in the flow (as on a chat.v2 socket).
    private func open(_ subscription: Subscription, context: ChannelHandlerContext) {
        subscription.opened()
        hub.add(subscription, to: subscription.channel)
        if subscription.hasPresence { server.presence.join(subscription.channel, member: person.member) }
        let first = subscription.flow.opened(resume: subscription.resume) ?? subscription.flow.openedAtPosition()
        var history: Result<History, any Error>?
        var readState: (read: Int64, seen: Int64?)?
        func started() {
            guard let history, let readState else { return }
            historyRead(history, for: subscription, read: readState.read, seen: readState.seen)
        }
        server.reads.read(first, of: subscription.channel, for: hub) { result in
            history = result
            started()
        }
        self.readState(of: subscription.channel, on: context.eventLoop) { read, seen in
            readState = (read, seen)
            started()
        }
    }

    /// How far the person has read the channel (and, in a one-to-one room, the other
    /// person): only a proven identity has a read state. An unreadable one counts as 0.
    private func readState(of channel: ChannelName, on eventLoop: any EventLoop, then: @escaping (Int64, Int64?) -> Void) {
        guard let me = person.verified else {
            then(0, nil)
            return
        }
        let other = RoomPolicy.pair(of: channel).map { $0.0 == me ? $0.1 : $0.0 }
        server.readStates.read([me] + (other.map { [$0] } ?? []), of: channel, on: eventLoop) { result in
            let states = (try? result.get()) ?? [:]
            then(states[me] ?? 0, other.map { states[$0] ?? 0 })
        }
    }

    private func readHistory(_ read: DeliveryFlow.HistoryRead, for subscription: Subscription, context: ChannelHandlerContext) {
        subscription.readHistory(read, from: server.reads, on: context.eventLoop) { result in
            self.historyRead(result, for: subscription)
        }
    }

    private func historyRead(_ result: Result<History, any Error>, for subscription: Subscription, read: Int64 = 0, seen: Int64? = nil) {
        guard isOpen, let context, subscription.state == .open, subscriptions[subscription.channel] === subscription else { return }
        let channel = subscription.channel
        if !subscription.announced, case .success(let history) = result {
            subscription.announced = true
            if subscription.resume == nil {
                position[channel] = EventStreamPosition.Entry(channel: channel, epoch: history.epoch ?? "", offset: history.lastOffset)
            }
            let subscribed = ChatV2.subscribed(channel: channel, epoch: history.epoch, offset: history.lastOffset, read: read, seen: seen)
            // With the stream's position: a reconnect from here resumes every channel it has.
            let frame = EventStreamFrames.frame(name: "subscribed", webSocketFrame: subscribed)
            context.write(wrapOutboundOut(EventStreamFrames.withoutID(frame)), promise: nil)
            context.write(wrapOutboundOut(EventStreamFrames.idLine(currentPosition)), promise: nil)
            if subscription.hasPresence, let frame = server.presence.membersFrames(of: channel)?[WireFormat.chatV1.rawValue] {
                context.write(wrapOutboundOut(EventStreamFrames.frame(name: "members", webSocketFrame: frame)), promise: nil)
            }
            if let until = server.moderations.kept(channel)?.mutedUntil(person.member.id, now: RoomModeration.now) {
                subscription.mutedUntil = until
                context.write(wrapOutboundOut(EventStreamFrames.frame(name: "muted", webSocketFrame: ChatV1.muted(channel: channel, until: until))), promise: nil)
            }
        }
        var behind = 0
        let outcome = replay(result, frameIndex: EventStreamFrames.index, through: subscription, context: context, fellBehind: &behind)
        if behind > 0 {
            fellBehind()
            return
        }
        switch outcome {
        case .done:
            break
        case .readNext(let next):
            readHistory(next, for: subscription, context: context)
        case .failed(let error):
            // The head is out: the stream cannot be refused any more. It ends, and the
            // client resumes from its last id.
            logger.warning("Cannot start an event stream's channel: the history is unavailable", metadata: ["channel": "\(channel)", "error": "\(error)"])
            let message = "The history of \(channel) cannot be read now (\(error)); reconnect to resume."
            let refused = ChatV2.refused(channel: channel.rawValue, code: WebSocketCloseCode.unavailable.rawValue, message: message, until: nil, reason: "unavailable")
            context.writeAndFlush(wrapOutboundOut(EventStreamFrames.frame(name: "refused", webSocketFrame: refused)), promise: nil)
            close()
        }
    }

    /// The whole position, in the request's order: the id of the stream's next event.
    var currentPosition: EventStreamPosition {
        EventStreamPosition(entries: order.compactMap { position[$0] })
    }

    // MARK: - The answer's head

    /// The answer's head, written as bytes: the body is the stream, delimited by the
    /// connection's end (no chunks: nothing for a proxy to buffer or reframe).
    static func head(_ headers: HTTPFields) -> ByteBuffer {
        var head = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")
        for field in headers {
            head.writeString(field.name.rawName)
            head.writeStaticString(": ")
            head.writeString(field.value)
            head.writeStaticString("\r\n")
        }
        head.writeStaticString("\r\n")
        return head
    }
}
