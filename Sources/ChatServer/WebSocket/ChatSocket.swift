import Chat
import CompressNIO
import Foundation
import Logging
import NIOCore
import NIOWebSocket

/// One WebSocket on `/wb/`: a lean NIO handler, no Task and no async sequence per socket.
///
/// The hub hands it one ``Batch`` per drain: the batch's frames, encoded and joined once
/// for every socket of the channel, go out as one write and one flush. Inbound frames go through ``MessageAssembler``; what the client may send
/// depends on its ``WireFormat`` (see docs/PROTOCOL.md).
final class ChatSocket: ChannelInboundHandler, HubMember {
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
        var messageRate: (rate: Double, burst: Double)?
    }

    /// Where a `chat.v1` client resumes: the last offset it has, in its epoch.
    struct Resume: Sendable {
        var after: Int64
        var epoch: String
    }

    /// How deliveries currently reach the socket.
    private enum Flow {
        /// Written as they come.
        case live
        /// Resuming: the history is being read; live deliveries wait here.
        case replaying([Delivery])
        /// The client fell behind by more than the queue limit: messages are dropped,
        /// and once the socket drains it is told what it missed: a `reset` if the epoch
        /// changed meanwhile, then one `gap` for the range.
        case dropping(from: Int64?, to: Int64?, reset: String?)
    }

    private enum State {
        case open
        case closing
        case closed
    }

    /// The echo route of conformance tests: messages go back to the client, compressed
    /// like the hub's when permessage-deflate was negotiated.
    struct Echo {
        var deflateMinimumSize: Int
        var compressor: ZlibCompressor?
    }

    let channelName: ChannelName
    let format: WireFormat
    private var echo: Echo?
    private let deflates: Bool
    /// Which of an event's frames this socket gets (its format, deflated or not).
    private let frameIndex: Int
    private let hub: LoopHub
    private let broker: any Broker
    private let resume: Resume?
    private var flow = Flow.live
    /// Where the resume's history read ended. Until a message past it arrives, live
    /// messages up to it are skipped: the hub may hand over, at its next drain, a
    /// message that the history read already carried (the batch window).
    private var replayedThrough: (epoch: String, offset: Int64)?
    private let settings: Settings
    private var logger: Logger
    private var assembler: MessageAssembler
    private var context: ChannelHandlerContext?
    private var state = State.open
    private var pingSentAt: NIODeadline?
    private var rateLimit: SocketRateLimit?
    private let metrics: ChatMetrics
    private let refusals: Refusals
    /// The client's address, for the refusals' log lines.
    private let client: String
    /// Who is in the room: the tracker, and who this socket is (its member id).
    private let presence: (tracker: PresenceTracker, id: String)?
    /// The name this socket shows; handed to the tracker on open, then dropped.
    private var shownName: String?

    init(
        channelName: ChannelName,
        kind: FrameKind,
        echo: Echo? = nil,
        resume: Resume?,
        hub: LoopHub,
        broker: any Broker,
        settings: Settings,
        metrics: ChatMetrics = .none,
        refusals: Refusals,
        client: String,
        presence: (tracker: PresenceTracker, member: Member)? = nil,
        logger: Logger
    ) {
        self.metrics = metrics
        self.refusals = refusals
        self.client = client
        self.presence = presence.map { ($0.tracker, $0.member.id) }
        self.shownName = presence?.member.name
        self.channelName = channelName
        self.format = kind.format
        self.frameIndex = kind.index
        self.echo = echo
        self.deflates = kind.deflate != nil
        self.resume = resume
        self.hub = hub
        self.broker = broker
        self.settings = settings
        self.logger = logger
        self.rateLimit = settings.messageRate.map { SocketRateLimit(rate: $0.rate, burst: $0.burst) }
        self.assembler = MessageAssembler(
            maximumMessageSize: settings.maximumMessageSize,
            inflater: kind.deflate.map { PerMessageDeflate.Inflater(keepsContext: !$0.clientNoContextTakeover) }
        )
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        context.channel.setOption(
            ChannelOptions.writeBufferWaterMark,
            value: .init(low: settings.queueLimit / 2, high: settings.queueLimit)
        ).whenFailure { _ in }
        // Join the hub first, then read the history: whatever is published meanwhile
        // waits in `flow` and is either in the history read or after it.
        if echo == nil { hub.add(self, to: channelName) }
        if let presence {
            presence.tracker.join(channelName, member: Member(id: presence.id, name: shownName))
            shownName = nil
            // Who is here already, so that the joins and leaves that follow add up.
            if format == .chatV1, let snapshot = presence.tracker.snapshot(of: channelName), let members = snapshot.members {
                context.writeAndFlush(wrapOutboundOut(ChatV1.members(channel: channelName, online: snapshot.online, members: members)), promise: nil)
            }
        }
        if let resume { startReplay(resume) }
        logger.debug("WebSocket open", metadata: ["channel": "\(channelName)", "protocol": "\(format)", "deflate": "\(frameIndex != format.rawValue)"])
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .dropping(let from, let to, let reset) = flow {
            flow = .live
            logger.info("A slow reader caught up; reporting what it missed", metadata: ["from": "\(from ?? 0)", "to": "\(to ?? 0)"])
            if let reset { context.write(wrapOutboundOut(ChatV1.reset(channel: channelName, epoch: reset)), promise: nil) }
            if let from, let to { context.write(wrapOutboundOut(ChatV1.gap(channel: channelName, from: from, to: to)), promise: nil) }
            context.flush()
        }
        context.fireChannelWritabilityChanged()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        logger.debug("WebSocket closed", metadata: ["channel": "\(channelName)"])
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // Closing: only the client's close frame matters; anything else costs nothing more.
        guard state == .open || frame.opcode == .connectionClose else { return }
        // Every frame counts against the rate, pongs and empty continuations too: each
        // costs the server work whether or not it completes a message. With frames
        // counted, bytes are bounded too: no frame is larger than the message limit.
        if state == .open, rateLimit?.take() == false {
            let rate = settings.messageRate.map { Gatekeeper.describe(rate: $0.rate) } ?? ""
            close(.policyViolation, "too many messages: at most \(rate) a second", context: context, refusal: "rate_limited", log: "Closing a WebSocket that sends too fast")
            return
        }
        let outcome = assembler.receive(frame)
        switch outcome {
        case .none:
            break
        case .text(let text):
            if echo != nil { echoBack(opcode: WebSocketWire.text, ByteBuffer(string: text), context: context) } else { received(text: text, context: context) }
        case .binary(let data):
            if echo != nil { echoBack(opcode: WebSocketWire.binary, data, context: context) } else {
                close(.unsupportedData, "binary messages are not accepted; send text", context: context, refusal: "binary", log: "Closing a WebSocket that sent a binary message")
            }
        case .ping(let payload):
            guard state == .open else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.pong, payload: payload)), promise: nil)
        case .pong:
            pingSentAt = nil
        case .close(let code):
            if state == .open {
                // Echo the client's close (RFC 6455 §5.5.1), then hang up.
                state = .closing
                var payload = context.channel.allocator.buffer(capacity: 2)
                if let code { payload.writeInteger(code) }
                context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.close, payload: payload)))
                    .whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        case .fail(let code, let reason):
            close(code, reason, context: context, refusal: "protocol_error", log: "Closing a WebSocket that broke the protocol")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server allows half-closed connections (for HTTP); a WebSocket whose client
        // hung up has nothing more to say: close it now, not at the next missed ping.
        if case .some(.inputClosed) = event as? ChannelEvent {
            logger.debug("WebSocket client hung up", metadata: ["channel": "\(channelName)"])
            state = .closed
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            close(.messageTooBig, "frames are limited to \(settings.maximumMessageSize) bytes", context: context, refusal: "too_large", log: "Closing a WebSocket that sent an oversized frame")
        case let error as NIOWebSocketError:
            close(.protocolError, "malformed frame (\(error))", context: context, refusal: "protocol_error", log: "Closing a WebSocket that sent a malformed frame")
        default:
            logger.debug("WebSocket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    // MARK: - Hub member

    func deliver(_ batch: Batch) {
        guard state == .open, let context else { return }
        switch flow {
        case .live:
            if replayedThrough != nil {
                sendAfterReplay(batch.deliveries, context: context)
                context.flush()
                return
            }
            // The batch's frames of this socket's format, joined once for all its sockets.
            guard let frames = batch.frames(format: frameIndex) else { return }
            guard isWritable(context) else {
                startDropping(batch.deliveries.map(\.event), context: context)
                return
            }
            context.writeAndFlush(wrapOutboundOut(frames), promise: nil)
        case .replaying(var waiting):
            flow = .live  // drop the array's second reference before appending
            waiting.append(contentsOf: batch.deliveries)
            flow = .replaying(waiting)
        case .dropping:
            for delivery in batch.deliveries { send(delivery.event, frame: nil, context: context) }
            metrics.dropped(.slowReader, count: batch.deliveries.count)
        }
    }

    /// Whether the socket can take more. Unflushed writes count too: flush them to the
    /// socket first. Only a reader the kernel cannot take more from is slow.
    private func isWritable(_ context: ChannelHandlerContext) -> Bool {
        if context.channel.isWritable { return true }
        context.flush()
        return context.channel.isWritable
    }

    /// Writes one event's frame, or, past the queue limit, drops it and remembers what
    /// was dropped. Resume replays go through here, event by event, so they obey the
    /// same limit as live batches.
    private func send(_ event: ChatEvent, frame: ByteBuffer?, context: ChannelHandlerContext) {
        switch flow {
        case .live:
            guard isWritable(context) else {
                startDropping([event], context: context)
                return
            }
            if let frame { context.write(wrapOutboundOut(frame), promise: nil) }
        case .dropping(var from, var to, var reset):
            switch event {
            case .message(let message):
                from = from ?? message.offset
                to = max(to ?? message.offset, message.offset)
            case .gap(_, let first, let last):
                from = min(from ?? first, first)
                to = max(to ?? last, last)
            case .reset(_, let epoch):
                // Offsets dropped so far belong to the old epoch: the reset covers them.
                reset = epoch
                from = nil
                to = nil
            case .presence, .members, .join, .leave:
                break  // who is here is told again; a reader that catches up can ask ("who")
            }
            flow = .dropping(from: from, to: to, reset: reset)
        case .replaying:
            preconditionFailure("deliveries wait while replaying")
        }
    }

    func goAway() {
        guard let context else { return }
        close(.goingAway, "server shutting down; reconnect", context: context)
    }

    /// Pings the client; closes the socket if the previous ping went unanswered.
    func heartbeat(now: NIODeadline) {
        // Called by the hub on this socket's loop every heartbeat interval.
        guard state == .open, let context else { return }
        if pingSentAt != nil {
            logger.info("Closing a WebSocket that stopped answering pings", metadata: ["channel": "\(channelName)"])
            state = .closed
            context.close(promise: nil)
            return
        }
        pingSentAt = now
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.ping, payload: ByteBuffer())), promise: nil)
    }

    // MARK: - Slow readers

    /// The socket holds more than the queue limit unsent: drop instead of queueing.
    ///
    /// A chat.v1 client is told the range once it catches up and fetches it from
    /// /history; a client of the original protocol cannot recover, so it is closed.
    private func startDropping(_ events: [ChatEvent], context: ChannelHandlerContext) {
        metrics.queueOverflow(protocol: format == .raw ? "original" : "chat.v1")
        metrics.dropped(.slowReader, count: events.count)
        switch format {
        case .raw:
            // The close frame waits behind what is queued: give it longer to get through.
            close(
                .policyViolation, "too slow: more than \(settings.queueLimit) bytes waited; messages were dropped",
                context: context, timeout: max(settings.closeTimeout, .seconds(10)), refusal: "slow_reader", log: "Closing a slow reader of the original protocol"
            )
        case .chatV1:
            logger.info("A chat.v1 reader fell behind; dropping its messages until it catches up", metadata: ["channel": "\(channelName)"])
            flow = .dropping(from: nil, to: nil, reset: nil)
            for event in events { send(event, frame: nil, context: context) }
        }
    }

    // MARK: - Resume

    /// Most messages read from the history at once while resuming.
    static let replayPage = 100
    /// Messages in a resume's first read; later reads hold about ``replayPageBytes``.
    static let firstReplayPage = 20
    /// About how many bytes of messages a replay reads at once.
    static let replayPageBytes = 1 << 20

    /// Resumes in pages of ``replayPage``: each page is written before the next is read,
    /// so a resuming socket holds one page, not the whole history. A reader too slow
    /// for its own replay is dropped to like a live one: what it has not had becomes a
    /// `gap`, told once it catches up.
    private func startReplay(_ resume: Resume) {
        flow = .replaying([])
        readReplayPage(after: resume.after, count: Self.firstReplayPage, resume: resume, epoch: nil, pages: 1)
    }

    /// Reads `count` messages after `offset`; `epoch` is `nil` for the first page.
    private func readReplayPage(after offset: Int64, count: Int, resume: Resume, epoch: String?, pages: Int) {
        guard let context else { return }
        let broker = self.broker
        let channel = channelName
        context.eventLoop.makeFutureWithTask {
            try await broker.history(of: channel, after: offset, limit: count)
        }.whenComplete { result in
            self.replayed(result, count: count, resume: resume, epoch: epoch, pages: pages)
        }
    }

    private func replayed(_ result: Result<History, any Error>, count: Int, resume: Resume, epoch known: String?, pages: Int) {
        guard state == .open, let context, case .replaying(let waiting) = flow else { return }
        flow = .live
        let history: History
        switch result {
        case .success(let read):
            history = read
        case .failure(let error):
            logger.warning("Cannot resume a socket: the history is unavailable", metadata: ["channel": "\(channelName)", "error": "\(error)"])
            close(.tryAgainLater, "history unavailable; reconnect to resume", context: context)
            return
        }
        var more = false
        if known == nil, !history.covers(after: resume.after, epoch: resume.epoch) {
            logger.debug("Resume not covered by the history; sending reset", metadata: ["channel": "\(channelName)"])
            context.write(wrapOutboundOut(ChatV1.reset(channel: channelName, epoch: history.epoch)), promise: nil)
        } else if let epoch = history.epoch, known == nil || known == epoch {
            // (A new epoch between two pages ends the replay: its messages come live.)
            var last = replayedThrough?.offset ?? resume.after
            for message in history.messages {
                send(.message(message), frame: ChatV1.message(message), context: context)
                last = message.offset
            }
            replayedThrough = (epoch, last)
            if case .dropping(let from, let to, let reset) = flow {
                // Too slow for its replay: the pages not read yet are part of the gap.
                flow = .dropping(from: from, to: max(to ?? history.lastOffset, history.lastOffset), reset: reset)
            } else {
                more = history.messages.count == count && last < history.lastOffset && pages < 10_000
            }
            if more {
                context.flush()
                flow = .replaying(waiting)
                let average = max(1, history.messages.reduce(0) { $0 + $1.data.readableBytes } / max(1, history.messages.count))
                let next = max(1, min(Self.replayPage, Self.replayPageBytes / average))
                readReplayPage(after: last, count: next, resume: resume, epoch: epoch, pages: pages + 1)
                return
            }
        }
        sendAfterReplay(waiting, context: context)
        context.flush()
    }

    /// Sends live deliveries one by one, skipping the messages the replay carried; the
    /// first message past the replay ends the skipping.
    private func sendAfterReplay(_ deliveries: [Delivery], context: ChannelHandlerContext) {
        for delivery in deliveries {
            if let through = replayedThrough, case .message(let message) = delivery.event {
                if message.epoch == through.epoch, message.offset <= through.offset { continue }
                replayedThrough = nil
            }
            send(delivery.event, frame: delivery.frames[frameIndex], context: context)
        }
    }

    // MARK: - Inbound messages

    private func echoBack(opcode: UInt8, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard state == .open, var echo else { return }
        var frame = WebSocketWire.frame(opcode: opcode, payload: payload)
        if deflates, payload.readableBytes >= echo.deflateMinimumSize {
            if echo.compressor == nil { echo.compressor = try? ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 15)) }
            if let compressor = echo.compressor, let deflated = try? WebSocketWire.deflated(frame, with: compressor) { frame = deflated }
            self.echo = echo
        }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    private func received(text: String, context: ChannelHandlerContext) {
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
            case .invalid(let reason):
                refusals.record("Refused a chat.v1 frame", route: "socket", reason: "bad_frame", client: client, logger: logger, level: .debug, metadata: ["reason": "\(reason)"])
                context.writeAndFlush(wrapOutboundOut(ChatV1.error(reason)), promise: nil)
            }
        }
    }

    // MARK: - Closing

    /// Sends a close frame and hangs up once the client answers or `timeout` passes.
    /// - Parameters:
    ///   - refusal: the reason counted in `chatroom_refusals_total` when the server
    ///     closes because of what the client did; `log` is its (throttled) log line.
    private func close(
        _ code: WebSocketCloseCode, _ reason: String, context: ChannelHandlerContext, timeout: TimeAmount? = nil,
        refusal: String? = nil, log: Logger.Message? = nil
    ) {
        guard state == .open else { return }
        state = .closing
        if let refusal {
            refusals.record(
                log ?? "Closing a WebSocket", route: "socket", reason: refusal, client: client, logger: logger,
                metadata: ["channel": "\(channelName)", "code": "\(code.rawValue)", "reason": "\(reason)"]
            )
        }
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.closeFrame(code: code, reason: reason)), promise: nil)
        // Wait for the client's close frame, but not forever.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: timeout ?? settings.closeTimeout) { channel.close(promise: nil) }
    }

    private func leave() {
        guard context != nil else { return }
        context = nil
        state = .closed
        hub.remove(self, from: channelName)
        presence?.tracker.leave(channelName, id: presence!.id)
    }
}
