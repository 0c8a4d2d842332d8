import Chat
import Logging
import NIOCore
import NIOWebSocket

/// One WebSocket on `/wb/`: a lean NIO handler, no Task and no async sequence per socket.
///
/// The hub hands it one ``Batch`` per drain: the batch's frames, encoded and joined once
/// for every socket of the channel, go out as one write and one flush. What the socket
/// does with deliveries is decided by its ``DeliveryFlow``, what it does with the
/// client's frames by its ``WebSocketStateMachine``; this class carries out their
/// actions. What the client may send depends on its ``WireFormat`` (see docs/PROTOCOL.md).
final class ChatSocket: WebSocketEndpoint, HubMember, FlowHolder {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    struct Settings: Sendable {
        /// Largest message a client may send.
        var maximumMessageSize: Int
        /// How long the peer has to answer the server's close frame.
        var closeTimeout: TimeAmount
        /// Bytes that may wait for a slow reader before its messages are dropped.
        var queueLimit: Int
        /// Messages (and pings) a second the client may send, and the burst; `nil`: no limit.
        var messageRate: RateLimit?
    }

    // What every delivery reads comes first, on the object's first cache line.
    private var context: ChannelHandlerContext?
    /// Which of an event's frames this socket gets (its format, deflated or not).
    private let frameIndex: Int
    // The two machines are checked for exclusive access at run time in debug builds
    // only. In release builds the check was two runtime calls (swift_beginAccess) in
    // every delivery. They are safe without it: both are pure and take no closures, so
    // nothing they do can reach this socket again while a call to them is running. Every
    // access is in this file, on the channel's event loop.
    #if DEBUG
    var flow: DeliveryFlow
    private var connection: WebSocketStateMachine
    #else
    @exclusivity(unchecked) var flow: DeliveryFlow
    @exclusivity(unchecked) private var connection: WebSocketStateMachine
    #endif
    let channelName: ChannelName
    var channel: ChannelName { channelName }
    let format: WireFormat
    private let hub: LoopHub
    private let broker: any Broker
    private let reads: HistoryReads
    private let resume: DeliveryFlow.Resume?
    private let queueLimit: Int
    let closing: WebSocketEndpointSettings
    private let metrics: ChatMetrics
    /// Who is in the room: the tracker, and who this socket is (its member id).
    private let presence: (tracker: PresenceTracker, id: String)?
    /// The name this socket shows; handed to the tracker on open, then dropped.
    private var shownName: String?
    /// A signed-in socket's token, which closes it when it expires.
    private let lease: SignInLease?

    var logMetadata: Logger.Metadata { ["channel": "\(channelName)"] }
    private var logger: Logger { closing.logger }

    init(
        channelName: ChannelName,
        kind: FrameKind,
        resume: DeliveryFlow.Resume?,
        hub: LoopHub,
        broker: any Broker,
        reads: HistoryReads,
        settings: Settings,
        metrics: ChatMetrics = .none,
        refusals: Refusals,
        client: String,
        presence: (tracker: PresenceTracker, member: Member)? = nil,
        identity: String? = nil,
        lease: SignInLease? = nil,
        logger: Logger
    ) {
        self.lease = lease
        self.identity = identity ?? presence?.member.id
        self.metrics = metrics
        self.presence = presence.map { ($0.tracker, $0.member.id) }
        self.shownName = presence?.member.name
        self.channelName = channelName
        self.format = kind.format
        self.frameIndex = kind.index
        self.resume = resume
        self.hub = hub
        self.broker = broker
        self.reads = reads
        self.queueLimit = settings.queueLimit
        self.closing = WebSocketEndpointSettings(
            maximumMessageSize: settings.maximumMessageSize, closeTimeout: settings.closeTimeout, messageRate: settings.messageRate,
            refusals: refusals, client: client, logger: logger
        )
        self.connection = WebSocketStateMachine(
            assembler: MessageAssembler(
                maximumMessageSize: settings.maximumMessageSize,
                inflater: kind.deflate.map { PerMessageDeflate.Inflater(keepsContext: !$0.clientNoContextTakeover) }
            ),
            messageRate: settings.messageRate
        )
        self.flow = DeliveryFlow(slowReaders: kind.format == .raw ? .close : .drop)
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        context.channel.setOption(
            ChannelOptions.writeBufferWaterMark,
            value: .init(low: queueLimit / 2, high: queueLimit)
        ).whenFailure { _ in }
        // Join the hub first, then read the history: whatever is published meanwhile
        // waits in the flow and is either in the history read or after it.
        hub.add(self, to: channelName)
        lease?.start(on: context.eventLoop) { [weak self] in self?.tokenExpired() }
        if let presence {
            presence.tracker.join(channelName, member: Member(id: presence.id, name: shownName))
            shownName = nil
            // Who is here already, so that the joins and leaves that follow add up.
            if format == .chatV1, let frame = presence.tracker.membersFrames(of: channelName)?[frameIndex] {
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            }
        }
        if let read = flow.opened(resume: resume) {
            // The first page is shared with the sockets that resume here now.
            reads.read(read, of: channelName, for: hub) { result in self.historyRead(result) }
        }
        logger.debug("WebSocket open", metadata: ["channel": "\(channelName)", "protocol": "\(format)", "deflate": "\(frameIndex != format.rawValue)"])
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if connection.isOpen, context.channel.isWritable, let missed = flow.drained() {
            writeMissed(missed, of: channelName, context: context)
            context.flush()
        }
        context.fireChannelWritabilityChanged()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        logger.debug("WebSocket closed", metadata: logMetadata)
        context.fireChannelInactive()
    }

    func connectionReceived(_ frame: WebSocketFrame) -> WebSocketStateMachine.Inbound { connection.received(frame) }
    func connectionClose() -> Bool { connection.close() }
    func connectionHungUp() { connection.hungUp() }
    func connectionHeartbeat() -> WebSocketStateMachine.Heartbeat { connection.heartbeat() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readFrame(unwrapInboundIn(data), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !closedIfInputEnded(event, context: context) { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        frameErrorCaught(context: context, error: error)
    }

    // MARK: - Hub member

    let identity: String?

    func deliver(_ batch: Batch) {
        guard connection.isOpen, let context else { return }
        // The common case, without handing the flow the batch.
        let action = flow.isLive ? .writeJoined : flow.batchArrived(batch.deliveries)
        switch action {
        case .writeJoined:
            // The batch's frames of this socket's format, joined once for all its sockets.
            guard let frames = batch.frames(format: frameIndex) else { return }
            guard isWritable(context) else {
                flow.fellBehind(batch.deliveries.lazy.map(\.event))
                fellBehind(dropped: batch.deliveries.count, context: context)
                return
            }
            context.writeAndFlush(wrapOutboundOut(frames), promise: nil)
        case .offerEach:
            let behind = offerLive(batch.deliveries, frameIndex: frameIndex, through: self, context: context)
            if behind > 0 { fellBehind(dropped: behind, context: context) }
            context.flush()
        case .held:
            break
        case .dropped:
            metrics.dropped(.slowReader, count: batch.deliveries.count)
        }
    }

    /// A ban closes the socket (4403); a mute is told (`muted`).
    func moderated(_ delivery: Delivery) {
        guard connection.isOpen, let context else { return }
        switch delivery.event {
        case .moderation(_, .banned):
            close(.banned, RoomModeration.bannedWords, context: context, refusal: "banned", log: "Closing a socket whose person was banned from the room")
        case .moderation(_, .muted):
            if let frame = delivery.frames[frameIndex] { context.writeAndFlush(wrapOutboundOut(frame), promise: nil) }
        default:
            break
        }
    }

    func goAway() {
        guard let context else { return }
        close(.goingAway, "server shutting down; reconnect", context: context)
    }

    /// Pings the client; closes the socket if the previous ping went unanswered.
    func heartbeat(now: NIODeadline) {
        // Called by the hub on this socket's loop every heartbeat interval.
        guard let context else { return }
        beat(context: context)
    }

    // MARK: - Falling behind

    /// The socket holds more than the queue limit unsent: its messages are dropped.
    ///
    /// A chat.v1 client is told the range once it catches up and fetches it from
    /// /history; a client of the original protocol cannot recover, so it is closed.
    private func fellBehind(dropped: Int, context: ChannelHandlerContext) {
        metrics.queueOverflow(protocol: format == .raw ? "original" : "chat.v1")
        metrics.dropped(.slowReader, count: dropped)
        switch flow.slowReaders {
        case .close:
            // The close frame waits behind what is queued: give it longer to get through.
            close(
                .policyViolation, "too slow: more than \(queueLimit) bytes waited; messages were dropped",
                context: context, timeout: max(closing.closeTimeout, .seconds(10)), refusal: "slow_reader", log: "Closing a slow reader of the original protocol"
            )
        case .drop:
            logger.info("A chat.v1 reader fell behind; dropping its messages until it catches up", metadata: logMetadata)
        }
    }

    // MARK: - Resume

    private func readHistory(_ read: DeliveryFlow.HistoryRead, context: ChannelHandlerContext) {
        reads.readPage(read, of: channelName, on: context.eventLoop) { result in
            self.historyRead(result)
        }
    }

    private func historyRead(_ result: Result<History, any Error>) {
        guard connection.isOpen, let context else { return }
        var behind = 0
        let outcome = replay(result, frameIndex: frameIndex, through: self, context: context, fellBehind: &behind)
        if behind > 0 { fellBehind(dropped: behind, context: context) }
        switch outcome {
        case .done:
            break
        case .readNext(let next):
            readHistory(next, context: context)
        case .failed(let error):
            logger.warning("Cannot resume a socket: the history is unavailable", metadata: ["channel": "\(channelName)", "error": "\(error)"])
            close(.tryAgainLater, "history unavailable; reconnect to resume", context: context)
        }
    }

    // MARK: - Inbound messages

    func receivedText(_ text: String, context: ChannelHandlerContext) {
        switch format {
        case .raw:
            // The original app's protocol carries nothing from client to server: text is
            // accepted and ignored, so clients that send keep-alive text keep working.
            logger.trace("Ignored text from a client of the original protocol", metadata: ["bytes": "\(text.utf8.count)"])
        case .chatV1:
            switch ChatV1Request(text) {
            case .ping:
                context.writeAndFlush(wrapOutboundOut(ChatV1.pong()), promise: nil)
            case .who:
                let snapshot = presence?.tracker.snapshot(of: channelName) ?? RoomSnapshot(online: 0, members: [])
                context.writeAndFlush(wrapOutboundOut(ChatV1.members(channel: channelName, online: snapshot.online, members: snapshot.members ?? [])), promise: nil)
            case .refresh(let token):
                refresh(token, context: context)
            case .invalid(let reason):
                closing.refusals.record(
                    "Refused a chat.v1 frame", route: "socket", reason: "bad_frame", client: closing.client, logger: logger, level: .debug, metadata: ["reason": "\(reason)"]
                )
                context.writeAndFlush(wrapOutboundOut(ChatV1.error(reason)), promise: nil)
            }
        }
    }

    func receivedBinary(_ data: ByteBuffer, context: ChannelHandlerContext) {
        close(.unsupportedData, "binary messages are not accepted; send text", context: context, refusal: "binary", log: "Closing a WebSocket that sent a binary message")
    }

    private func tokenExpired() {
        guard let context else { return }
        closeForExpiredToken(context: context)
    }

    private func refresh(_ token: String, context: ChannelHandlerContext) {
        guard let lease else {
            context.writeAndFlush(wrapOutboundOut(ChatV1.error("This socket did not sign in: there is no token to refresh.")), promise: nil)
            return
        }
        lease.refresh(token, on: context.eventLoop).whenSuccess { result in
            guard self.connection.isOpen, let context = self.context else { return }
            self.answer(refresh: result, context: context)
            // A newer token that no longer opens this room ends the socket, as if refused.
            if case .success(let signIn) = result, let outside = signIn.refusal(for: self.channelName) {
                self.close(.privateRoom, outside.message, context: context, refusal: "forbidden", log: "Closing a WebSocket whose newer token does not open its room")
            }
        }
    }

    private func leave() {
        guard context != nil else { return }
        lease?.end()
        context = nil
        connection.hungUp()
        hub.remove(self, from: channelName)
        if let presence { presence.tracker.leave(channelName, id: presence.id) }
    }
}
