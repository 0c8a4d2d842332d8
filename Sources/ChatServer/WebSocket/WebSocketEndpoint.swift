import Chat
import Logging
import NIOCore
import NIOWebSocket

/// What ``ChatSocket`` and ``EchoSocket`` share: a ``WebSocketStateMachine`` fed with
/// the frame decoder's frames, and the server's side of the close handshake.
///
/// Both are handlers on their channel's event loop; everything here runs there. Each
/// keeps its machine in a private property and hands it events through the three
/// requirements below: every access of the machine stays in the handler's own file, so
/// the compiler can check exclusivity statically and a delivery pays for no runtime check.
protocol WebSocketEndpoint: DeliveryStream where InboundIn == WebSocketFrame {
    /// ``WebSocketStateMachine/received(_:now:)``.
    func connectionReceived(_ frame: WebSocketFrame) -> WebSocketStateMachine.Inbound
    /// ``WebSocketStateMachine/close()``.
    func connectionClose() -> Bool
    /// ``WebSocketStateMachine/hungUp()``.
    func connectionHungUp()
    /// ``WebSocketStateMachine/heartbeat()``.
    func connectionHeartbeat() -> WebSocketStateMachine.Heartbeat
    var closing: WebSocketEndpointSettings { get }
    /// Metadata of this socket's log lines (its channel).
    var logMetadata: Logger.Metadata { get }

    func receivedText(_ text: String, context: ChannelHandlerContext)
    func receivedBinary(_ data: ByteBuffer, context: ChannelHandlerContext)
}

/// How an endpoint closes and reports what it refused.
struct WebSocketEndpointSettings {
    /// Largest message a client may send (stated in the refusal of a larger frame).
    var maximumMessageSize: Int
    /// How long the peer has to answer the server's close frame.
    var closeTimeout: TimeAmount
    /// Messages (and pings) a second the client may send; `nil`: no limit.
    var messageRate: RateLimit?
    var refusals: Refusals
    /// The client's address, for the refusals' log lines.
    var client: String
    var logger: Logger
}

extension WebSocketEndpoint {
    /// Carries out what the connection's machine makes of a frame.
    func readFrame(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        switch connectionReceived(frame) {
        case .ignore:
            break
        case .tooFast:
            let rate = closing.messageRate?.described ?? ""
            close(.policyViolation, "too many messages: at most \(rate) a second", context: context, refusal: "rate_limited", log: "Closing a WebSocket that sends too fast")
        case .text(let text):
            receivedText(text, context: context)
        case .binary(let data):
            receivedBinary(data, context: context)
        case .pong(let payload):
            context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.pong, payload: payload)), promise: nil)
        case .echoClose(let code):
            var payload = context.channel.allocator.buffer(capacity: 2)
            if let code { payload.writeInteger(code) }
            context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.close, payload: payload)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .hangUp:
            context.close(promise: nil)
        case .fail(let code, let reason):
            close(code, reason, context: context, refusal: "protocol_error", log: "Closing a WebSocket that broke the protocol")
        }
    }

    /// Sends a close frame and hangs up once the client answers or `timeout` passes.
    /// - Parameters:
    ///   - refusal: the reason counted in `chatroom_refusals_total` when the server
    ///     closes because of what the client did; `log` is its (throttled) log line.
    func close(
        _ code: WebSocketCloseCode, _ reason: String, context: ChannelHandlerContext, timeout: TimeAmount? = nil,
        refusal: String? = nil, log: Logger.Message? = nil
    ) {
        guard connectionClose() else { return }
        if let refusal {
            var metadata = logMetadata
            metadata["code"] = "\(code.rawValue)"
            metadata["reason"] = "\(reason)"
            closing.refusals.record(log ?? "Closing a WebSocket", route: "socket", reason: refusal, client: closing.client, logger: closing.logger, metadata: metadata)
        }
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.closeFrame(code: code, reason: reason)), promise: nil)
        // Wait for the client's close frame, but not forever.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: timeout ?? closing.closeTimeout) { channel.close(promise: nil) }
    }

    /// A heartbeat tick: pings the client, or hangs up on one that did not answer the last ping.
    func beat(context: ChannelHandlerContext) {
        switch connectionHeartbeat() {
        case .none:
            break
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: WebSocketWire.ping, payload: ByteBuffer())), promise: nil)
        case .hangUp:
            closing.logger.info("Closing a WebSocket that stopped answering pings", metadata: logMetadata)
            context.close(promise: nil)
        }
    }

    /// Tells a reader that caught up what one channel's flow dropped: a `reset` if the
    /// epoch changed meanwhile, then the range as a `gap`. Not flushed.
    func writeMissed(_ missed: DeliveryFlow.Missed, of channel: ChannelName, context: ChannelHandlerContext) {
        closing.logger.info(
            "A slow reader caught up; reporting what it missed", metadata: ["channel": "\(channel)", "from": "\(missed.from ?? 0)", "to": "\(missed.to ?? 0)"]
        )
        if let reset = missed.reset { context.write(wrapOutboundOut(ChatV1.reset(channel: channel, epoch: reset)), promise: nil) }
        if let from = missed.from, let to = missed.to { context.write(wrapOutboundOut(ChatV1.gap(channel: channel, from: from, to: to)), promise: nil) }
    }

    /// Frames the decoder could not read are refused with a close code that says why.
    func frameErrorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            close(.messageTooBig, "frames are limited to \(closing.maximumMessageSize) bytes", context: context, refusal: "too_large", log: "Closing a WebSocket that sent an oversized frame")
        case let error as NIOWebSocketError:
            close(.protocolError, "malformed frame (\(error))", context: context, refusal: "protocol_error", log: "Closing a WebSocket that sent a malformed frame")
        default:
            closing.logger.debug("WebSocket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// The server allows half-closed connections (for HTTP); a WebSocket whose client
    /// hung up has nothing more to say: it closes now, not at the next missed ping.
    /// `false` for events that are not that.
    func closedIfInputEnded(_ event: Any, context: ChannelHandlerContext) -> Bool {
        guard case .some(.inputClosed) = event as? ChannelEvent else { return false }
        closing.logger.debug("WebSocket client hung up", metadata: logMetadata)
        connectionHungUp()
        context.close(promise: nil)
        return true
    }
}
