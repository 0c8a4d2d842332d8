import NIOCore
import NIOWebSocket

/// A chat.v1 socket refused after its upgrade (a full room, a private room of others):
/// browsers cannot read an upgrade's HTTP status, so the reason goes in the close frame.
final class RefusedSocket: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private let code: WebSocketCloseCode
    private let reason: String

    init(code: WebSocketCloseCode, reason: String) {
        self.code = code
        self.reason = reason
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.closeFrame(code: code, reason: reason)), promise: nil)
        // Wait a moment for the client's close frame, then hang up.
        context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .connectionClose = unwrapInboundIn(data).opcode { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
