import CompressNIO
import Logging
import NIOCore
import NIOWebSocket

/// The echo route of conformance tests (`--test-echo-route`, scripts/autobahn.sh): every
/// message goes back to the client, compressed like the hub's when permessage-deflate
/// was negotiated. The same frame checks and close handshake as a chat socket; no
/// channel, no broker.
final class EchoSocket: WebSocketEndpoint {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private var connection: WebSocketStateMachine
    let closing: WebSocketEndpointSettings
    var logMetadata: Logger.Metadata { [:] }
    private let deflates: Bool
    private let deflateMinimumSize: Int
    private var compressor: ZlibCompressor?

    init(deflate: PerMessageDeflate.Agreement?, deflateMinimumSize: Int, settings: WebSocketEndpointSettings) {
        self.deflates = deflate != nil
        self.deflateMinimumSize = deflateMinimumSize
        self.closing = settings
        self.connection = WebSocketStateMachine(
            assembler: MessageAssembler(
                maximumMessageSize: settings.maximumMessageSize,
                inflater: deflate.map { PerMessageDeflate.Inflater(keepsContext: !$0.clientNoContextTakeover) }
            ),
            messageRate: settings.messageRate
        )
    }

    func connectionReceived(_ frame: WebSocketFrame) -> WebSocketStateMachine.Inbound { connection.received(frame) }
    func connectionClose() -> Bool { connection.close() }
    func connectionHungUp() { connection.hungUp() }
    func connectionHeartbeat() -> WebSocketStateMachine.Heartbeat { connection.heartbeat() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readFrame(unwrapInboundIn(data), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        frameErrorCaught(context: context, error: error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !closedIfInputEnded(event, context: context) { context.fireUserInboundEventTriggered(event) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.hungUp()
        context.fireChannelInactive()
    }

    func receivedText(_ text: String, context: ChannelHandlerContext) {
        echo(opcode: WebSocketWire.text, ByteBuffer(string: text), context: context)
    }

    func receivedBinary(_ data: ByteBuffer, context: ChannelHandlerContext) {
        echo(opcode: WebSocketWire.binary, data, context: context)
    }

    private func echo(opcode: UInt8, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard connection.isOpen else { return }
        var frame = WebSocketWire.frame(opcode: opcode, payload: payload)
        if deflates, payload.readableBytes >= deflateMinimumSize {
            if compressor == nil { compressor = try? ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 15)) }
            if let compressor, let deflated = try? WebSocketWire.deflated(frame, with: compressor) { frame = deflated }
        }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }
}
