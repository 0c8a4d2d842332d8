import ChatClient
import NIOCore
import NIOPosix

/// What a chat.v2 socket of the load generator does with its connection: publish,
/// subscribe and count. Called on the socket's event loop only.
protocol V2Role: AnyObject, SendableMetatype {
    /// The server answered the upgrade with 101 and chose chat.v2; `cookie` is the `uid`
    /// cookie it set, if it set one.
    func opened(_ socket: V2Socket<Self>, context: ChannelHandlerContext, cookie: String?)
    /// One text frame, parsed; `payload` holds the bytes `frame`'s ranges point into.
    func received(_ frame: V2Frame, payload: UnsafeRawBufferPointer, socket: V2Socket<Self>, context: ChannelHandlerContext)
    /// The end of one read: a good moment to flush and to merge counts.
    func readComplete(_ socket: V2Socket<Self>, context: ChannelHandlerContext)
    /// The upgrade was refused (`status` is the HTTP status, 0 when the answer was not
    /// HTTP, or a 101 without chat.v2), or the connection ended or failed; `closeCode`
    /// is the server's close code if it sent a close frame.
    func ended(_ socket: V2Socket<Self>, refusal: String?, closeCode: UInt16?)
}

/// One chat.v2 client socket, as lean as the server's side: does the upgrade, parses
/// server frames in place, answers pings, and writes masked text frames that its role
/// queues (one flush per read, or when the role asks).
final class V2Socket<Role: V2Role>: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let role: Role
    /// Which connection of the role this is (a role that reconnects counts them).
    let generation: Int
    private var buffer = ByteBuffer()
    private var isUpgraded = false
    private var hasEnded = false
    private var closeCode: UInt16?
    private var outbox = ByteBuffer()
    private var scratch = ByteBuffer()
    /// This connection's masking key (RFC 6455 §5.3).
    private let mask: [UInt8]

    init(role: Role, generation: Int = 0) {
        self.role = role
        self.generation = generation
        mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
    }

    /// The upgrade request: chat.v2 offered, and the `uid` cookie if the client has one.
    static func upgradeRequest(host: String, port: Int, path: String = "/wb/", cookie: String?) -> ByteBuffer {
        ChatWebSocket.upgradeRequest(host: host, port: port, path: path, subprotocols: ["chat.v2"], headers: cookie.map { [("Cookie", $0)] } ?? [])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        if !isUpgraded {
            guard let headEnd = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = buffer.readString(length: headEnd.upperBound - buffer.readerIndex) ?? ""
            let lines = head.split(separator: "\r\n")
            var subprotocol: Substring?
            var cookie: String?
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].drop(while: { $0 == " " })
                if name == "sec-websocket-protocol" { subprotocol = value }
                if name == "set-cookie", value.hasPrefix("uid="), let semicolon = value.firstIndex(of: ";") { cookie = String(value[..<semicolon]) }
            }
            guard head.hasPrefix("HTTP/1.1 101"), subprotocol == "chat.v2" else {
                end(context: context, refusal: "\(lines.first ?? "no answer")\(subprotocol == nil ? "" : ", subprotocol \(subprotocol!)") \(String(buffer: buffer).prefix(200))")
                return
            }
            isUpgraded = true
            role.opened(self, context: context, cookie: cookie)
        }
        while let frame = ServerFrame(in: buffer) {
            switch frame.opcode {
            case ServerFrame.text:
                buffer.withUnsafeReadableBytes { bytes in
                    let start = frame.payloadIndex - buffer.readerIndex
                    let payload = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + frame.payloadLength)])
                    if let parsed = V2Frame(payload) { role.received(parsed, payload: payload, socket: self, context: context) }
                }
            case ServerFrame.ping:
                // Answered as a browser would.
                var payload = frame.payload(in: buffer)
                queueFrame(opcode: ServerFrame.pong, payload: &payload)
                flush(context: context)
            case ServerFrame.close:
                let payload = frame.payload(in: buffer)
                closeCode = payload.getInteger(at: payload.readerIndex, as: UInt16.self)
            default: break
            }
            buffer.moveReaderIndex(to: frame.end)
            if closeCode != nil {
                end(context: context, refusal: nil)
                return
            }
        }
        buffer.discardReadBytes()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard isUpgraded, !hasEnded else { return }
        role.readComplete(self, context: context)
        flush(context: context)
    }

    /// Queues a text frame whose payload `write` writes.
    func queueText(_ write: (inout ByteBuffer) -> Void) {
        scratch.clear()
        write(&scratch)
        queueFrame(opcode: ServerFrame.text, payload: &scratch)
    }

    private func queueFrame(opcode: UInt8, payload: inout ByteBuffer) {
        let length = payload.readableBytes
        outbox.writeInteger(UInt8(0x80 | opcode))
        switch length {
        case ..<126: outbox.writeInteger(UInt8(0x80 | length))
        case ..<65536:
            outbox.writeInteger(UInt8(0x80 | 126))
            outbox.writeInteger(UInt16(length))
        default:
            outbox.writeInteger(UInt8(0x80 | 127))
            outbox.writeInteger(UInt64(length))
        }
        outbox.writeBytes(mask)
        let first = outbox.writerIndex - outbox.readerIndex
        outbox.writeBuffer(&payload)
        outbox.withUnsafeMutableReadableBytes { bytes in
            mask.withUnsafeBufferPointer { key in
                for index in 0..<length { bytes[first + index] ^= key[index & 3] }
            }
        }
    }

    /// Writes what is queued.
    func flush(context: ChannelHandlerContext) {
        guard outbox.readableBytes > 0, !hasEnded else { return }
        context.writeAndFlush(NIOAny(outbox), promise: nil)
        outbox = context.channel.allocator.buffer(capacity: 256)
    }

    private func end(context: ChannelHandlerContext, refusal: String?) {
        guard !hasEnded else { return }
        hasEnded = true
        role.ended(self, refusal: refusal, closeCode: closeCode)
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        end(context: context, refusal: isUpgraded ? nil : "\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(context: context, refusal: isUpgraded ? nil : "connection closed before the upgrade was answered")
        context.fireChannelInactive()
    }
}

extension ByteBuffer {
    /// Writes `value` in decimal.
    mutating func writeDecimal(_ value: UInt64) {
        if value < 10 {
            writeInteger(UInt8(48 + value))
            return
        }
        var divisor: UInt64 = 1
        while value / divisor >= 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            writeInteger(UInt8(48 + rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}

/// Opens a chat.v2 socket for `role` on `loop`, which must be the loop `role` lives on;
/// the upgrade request goes out once connected, `source` binds it to a loopback address.
func connectV2<Role: V2Role>(
    _ role: NIOLoopBound<Role>, loop: any EventLoop, host: String, port: Int, path: String = "/wb/", cookie: String? = nil, source: String? = nil,
    generation: Int = 0
) -> EventLoopFuture<any Channel> {
    var bootstrap = ClientBootstrap(group: loop)
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(V2Socket(role: role.value, generation: generation))
            }
        }
    if let source {
        do { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0)) } catch { return loop.makeFailedFuture(error) }
    }
    return bootstrap.connect(host: host, port: port).map { channel in
        channel.writeAndFlush(V2Socket<Role>.upgradeRequest(host: host, port: port, path: path, cookie: cookie), promise: nil)
        return channel
    }
}
