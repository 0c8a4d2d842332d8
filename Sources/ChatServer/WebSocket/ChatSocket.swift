import Chat
import Foundation
import Logging
import NIOCore
import NIOWebSocket

/// One WebSocket on `/wb/`: a lean NIO handler, no Task and no async sequence per socket.
///
/// The hub writes pre-encoded frames straight into the channel and flushes once per
/// batch. Inbound frames go through ``MessageAssembler``; what the client may send
/// depends on its ``WireFormat`` (see docs/PROTOCOL.md).
final class ChatSocket: ChannelInboundHandler, HubMember {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    struct Settings: Sendable {
        /// Largest message a client may send.
        var maximumMessageSize: Int
        /// How long the peer has to answer the server's close frame.
        var closeTimeout: TimeAmount
    }

    private enum State {
        case open
        case closing
        case closed
    }

    let channelName: ChannelName
    let format: WireFormat
    private let hub: LoopHub
    private let settings: Settings
    private var logger: Logger
    private var assembler: MessageAssembler
    private var context: ChannelHandlerContext?
    private var state = State.open
    private var pingSentAt: NIODeadline?

    init(channelName: ChannelName, format: WireFormat, hub: LoopHub, settings: Settings, logger: Logger) {
        self.channelName = channelName
        self.format = format
        self.hub = hub
        self.settings = settings
        self.logger = logger
        self.assembler = MessageAssembler(maximumMessageSize: settings.maximumMessageSize)
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        hub.add(self, to: channelName)
        logger.debug("WebSocket open", metadata: ["channel": "\(channelName)", "protocol": "\(format)"])
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
        switch assembler.receive(frame) {
        case .none:
            break
        case .text(let text):
            received(text: text, context: context)
        case .binary:
            close(.unsupportedData, "binary messages are not accepted; send text", context: context)
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
            logger.info("Closing a WebSocket that broke the protocol", metadata: ["code": "\(code.rawValue)", "reason": "\(reason)"])
            close(code, reason, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            logger.info("Closing a WebSocket that sent an oversized frame")
            close(.messageTooBig, "frames are limited to \(settings.maximumMessageSize) bytes", context: context)
        case let error as NIOWebSocketError:
            logger.info("Closing a WebSocket that sent a malformed frame", metadata: ["error": "\(error)"])
            close(.protocolError, "malformed frame", context: context)
        default:
            logger.debug("WebSocket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    // MARK: - Hub member

    func enqueue(_ delivery: Delivery) {
        guard state == .open, let context else { return }
        context.write(wrapOutboundOut(delivery.frames[format.rawValue]), promise: nil)
    }

    func flush() {
        context?.flush()
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

    // MARK: - Inbound messages

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
            case .invalid(let reason):
                logger.debug("Refused a chat.v1 frame", metadata: ["reason": "\(reason)"])
                context.writeAndFlush(wrapOutboundOut(ChatV1.error(reason)), promise: nil)
            }
        }
    }

    // MARK: - Closing

    private func close(_ code: WebSocketCloseCode, _ reason: String, context: ChannelHandlerContext) {
        guard state == .open else { return }
        state = .closing
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.closeFrame(code: code, reason: reason)), promise: nil)
        // Wait for the client's close frame, but not forever.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: settings.closeTimeout) { channel.close(promise: nil) }
    }

    private func leave() {
        guard context != nil else { return }
        context = nil
        state = .closed
        hub.remove(self, from: channelName)
    }
}

/// What a `chat.v1` client may send.
enum ChatV1Request: Equatable {
    case ping
    case invalid(String)

    private struct Frame: Decodable {
        var type: String
    }

    init(_ text: String) {
        guard let frame = try? JSONDecoder().decode(Frame.self, from: Data(text.utf8)) else {
            self = .invalid("frames must be JSON objects with a \"type\"")
            return
        }
        switch frame.type {
        case "ping": self = .ping
        default: self = .invalid("unknown frame type \"\(frame.type.prefix(32))\"; chat.v1 clients may send {\"type\":\"ping\"}")
        }
    }
}
