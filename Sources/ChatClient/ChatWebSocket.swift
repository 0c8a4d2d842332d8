import Foundation
import NIOConcurrencyHelpers
import CompressNIO
import NIOCore
import NIOPosix

/// A WebSocket client for tests and tools: does its own handshake, reads frames into a
/// queue, and can send well-formed or deliberately broken frames.
public final class ChatWebSocket: Sendable {
    /// Something that arrived from the server.
    public enum Event: Sendable, Equatable {
        case text(String)
        case binary([UInt8])
        case ping([UInt8])
        case pong([UInt8])
        /// The server's close frame: its code (nil if none) and reason.
        case close(code: UInt16?, reason: String)
        /// The TCP connection ended.
        case disconnected
    }

    /// The upgrade was answered with something other than 101.
    public struct Refused: Error, Sendable, CustomStringConvertible {
        public var status: Int
        public var body: String
        public var description: String { "upgrade refused with \(status): \(body)" }
    }

    /// The subprotocol the server chose, if any.
    public let subprotocol: String?
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    public let extensions: String?
    private let channel: any Channel
    private let events: EventQueue<Event>
    private let compressed: NIOLockedValueBox<Int>

    private init(channel: any Channel, subprotocol: String?, extensions: String?, events: EventQueue<Event>, compressed: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.events = events
        self.compressed = compressed
    }

    /// Messages that arrived compressed (permessage-deflate) and were inflated.
    public var compressedMessages: Int { compressed.withLockedValue { $0 } }

    /// Opens a socket.
    /// - Parameters:
    ///   - path: request target, e.g. `/wb/?channel=c`.
    ///   - headers: extra request headers, e.g. `("Cookie", "channel=channel_2")`.
    ///   - subprotocols: offered in `Sec-WebSocket-Protocol`.
    ///   - answerPings: answer the server's pings, as browsers do.
    ///   - receiveBufferSize: the socket's kernel receive buffer (`SO_RCVBUF`), to play a slow reader.
    ///   - extensions: offered in `Sec-WebSocket-Extensions`, e.g. `permessage-deflate`. When the
    ///     server accepts permessage-deflate, compressed messages are inflated (the server
    ///     always compresses without context takeover).
    /// - Throws: ``Refused`` when the server answers the upgrade with an HTTP error.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        path: String = "/wb/",
        headers: [(String, String)] = [],
        subprotocols: [String] = [],
        answerPings: Bool = true,
        receiveBufferSize: Int? = nil,
        extensions: [String] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> ChatWebSocket {
        let events = EventQueue<Event>()
        let handshake = NIOLockedValueBox<CheckedContinuation<HandshakeResult, any Error>?>(nil)
        let compressed = NIOLockedValueBox(0)
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if let receiveBufferSize {
            // A small kernel buffer makes a reader that stops reading fall behind quickly.
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBufferSize))
        }
        let channel = try await bootstrap
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ClientFrameHandler(events: events, handshake: handshake, answerPings: answerPings, compressed: compressed)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
        let request = upgradeRequest(host: host, port: port, path: path, subprotocols: subprotocols, extensions: extensions, headers: headers)
        let result: HandshakeResult = try await withThrowingTaskGroup(of: HandshakeResult.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { continuation in
                    handshake.withLockedValue { $0 = continuation }
                    channel.writeAndFlush(request, promise: nil)
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ChatClientError("no upgrade response within \(timeout)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        guard result.status == 101 else {
            try? await channel.close()
            throw Refused(status: result.status, body: result.body)
        }
        return ChatWebSocket(channel: channel, subprotocol: result.subprotocol, extensions: result.extensions, events: events, compressed: compressed)
    }

    /// The upgrade request of a client socket, with a fresh `Sec-WebSocket-Key`.
    package static func upgradeRequest(
        host: String, port: Int, path: String, subprotocols: [String] = [], extensions: [String] = [], headers: [(String, String)] = []
    ) -> ByteBuffer {
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if !subprotocols.isEmpty { request += "Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))\r\n" }
        if !extensions.isEmpty { request += "Sec-WebSocket-Extensions: \(extensions.joined(separator: ", "))\r\n" }
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        return ByteBuffer(string: request)
    }

    /// The next event, or `nil` if none arrives within `timeout`.
    public func next(timeout: Duration = .seconds(5)) async -> Event? {
        await events.next(timeout: timeout)
    }

    /// The next text message, skipping pings; `nil` on timeout, close or disconnect.
    public func nextText(timeout: Duration = .seconds(5)) async -> String? {
        while let event = await next(timeout: timeout) {
            switch event {
            case .text(let text): return text
            case .ping, .pong: continue
            default: return nil
            }
        }
        return nil
    }

    /// Sends a text message.
    public func send(text: String) async throws {
        try await sendFrame(opcode: 0x1, payload: Array(text.utf8))
    }

    /// Sends text frames in one write, so that the server reads them together.
    public func send(texts: [String]) async throws {
        var buffer = ByteBuffer()
        for text in texts {
            var frame = Self.maskedFrame(opcode: 0x1, payload: Array(text.utf8))
            buffer.writeBuffer(&frame)
        }
        try await channel.writeAndFlush(buffer)
    }

    /// Sends one frame as given: for tests that break the protocol on purpose.
    public func sendFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) async throws {
        try await channel.writeAndFlush(Self.maskedFrame(opcode: opcode, payload: payload, fin: fin, masked: masked, rsv: rsv))
    }

    /// One client frame, masked unless told otherwise.
    static func maskedFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger((fin ? 0x80 : 0) | (rsv << 4) | opcode)
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case ..<126: buffer.writeInteger(maskBit | UInt8(payload.count))
        case ..<65536:
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(payload.count))
        default:
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(UInt64(payload.count))
        }
        if masked {
            let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
            buffer.writeBytes(mask)
            buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
        } else {
            buffer.writeBytes(payload)
        }
        return buffer
    }

    /// Sends a close frame with `code`.
    public func close(code: UInt16 = 1000) async throws {
        var payload: [UInt8] = []
        payload.append(UInt8(code >> 8))
        payload.append(UInt8(code & 0xFF))
        try await sendFrame(opcode: 0x8, payload: payload)
    }

    /// Drops the TCP connection without a close handshake.
    public func disconnect() async {
        try? await channel.close()
    }

    /// Stops reading from the socket (to play a slow reader) or starts again.
    public func setReading(_ reading: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: reading).get()
    }
}

struct HandshakeResult: Sendable {
    var status: Int
    var subprotocol: String?
    var extensions: String?
    var body: String
}

/// Parses the upgrade response, then server frames (unmasked), into events. Lives on its
/// channel's event loop; only the count of compressed messages is read from elsewhere.
private final class ClientFrameHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias Event = ChatWebSocket.Event

    private let events: EventQueue<Event>
    private let handshake: NIOLockedValueBox<CheckedContinuation<HandshakeResult, any Error>?>
    private let answerPings: Bool
    private let compressed: NIOLockedValueBox<Int>
    private var buffer = ByteBuffer()
    private var upgraded = false
    private var fragments: [UInt8] = []
    private var fragmentOpcode: UInt8?
    private var fragmentsCompressed = false
    /// Made at the first compressed message.
    private var inflater: Inflater?

    init(
        events: EventQueue<Event>, handshake: NIOLockedValueBox<CheckedContinuation<HandshakeResult, any Error>?>, answerPings: Bool,
        compressed: NIOLockedValueBox<Int>
    ) {
        self.events = events
        self.handshake = handshake
        self.answerPings = answerPings
        self.compressed = compressed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        if !upgraded {
            let text = String(buffer: buffer)
            guard let end = text.range(of: "\r\n\r\n") else { return }
            let head = String(text[..<end.lowerBound])
            let lines = head.components(separatedBy: "\r\n")
            let status = Int(lines[0].split(separator: " ").dropFirst().first ?? "") ?? 0
            var subprotocol: String?
            var extensions: String?
            var contentLength = 0
            for line in lines.dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                let value = parts[1].trimmingCharacters(in: .whitespaces)
                switch parts[0].lowercased() {
                case "sec-websocket-protocol": subprotocol = value
                case "sec-websocket-extensions": extensions = value
                case "content-length": contentLength = Int(value) ?? 0
                default: break
                }
            }
            let headBytes = head.utf8.count + 4
            if status != 101 && buffer.readableBytes < headBytes + contentLength { return }
            buffer.moveReaderIndex(forwardBy: headBytes)
            let body = status == 101 ? "" : (buffer.readString(length: contentLength) ?? "")
            upgraded = true
            let continuation = handshake.withLockedValue { value in
                defer { value = nil }
                return value
            }
            continuation?.resume(returning: HandshakeResult(status: status, subprotocol: subprotocol, extensions: extensions, body: body))
        }
        for event in frames() {
            if answerPings, case .ping(let payload) = event {
                context.writeAndFlush(NIOAny(ChatWebSocket.maskedFrame(opcode: ServerFrame.pong, payload: payload)), promise: nil)
            }
            events.push(event)
        }
    }

    private func frames() -> [Event] {
        var events: [Event] = []
        while let frame = ServerFrame(in: buffer) {
            let payload = buffer.getBytes(at: frame.payloadIndex, length: frame.payloadLength) ?? []
            buffer.moveReaderIndex(to: frame.end)
            switch frame.opcode {
            case ServerFrame.continuation:
                fragments += payload
                if frame.fin, let kind = fragmentOpcode {
                    let message = message(fragments, compressed: fragmentsCompressed)
                    events.append(kind == ServerFrame.text ? .text(String(decoding: message, as: UTF8.self)) : .binary(message))
                    fragments = []
                    fragmentOpcode = nil
                }
            case ServerFrame.text, ServerFrame.binary:
                if frame.fin {
                    let message = message(payload, compressed: frame.compressed)
                    events.append(frame.opcode == ServerFrame.text ? .text(String(decoding: message, as: UTF8.self)) : .binary(message))
                } else {
                    fragmentOpcode = frame.opcode
                    fragments = payload
                    fragmentsCompressed = frame.compressed
                }
            case ServerFrame.close:
                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
                events.append(.close(code: code, reason: String(decoding: payload.dropFirst(2), as: UTF8.self)))
            case ServerFrame.ping: events.append(.ping(payload))
            case ServerFrame.pong: events.append(.pong(payload))
            default: break
            }
        }
        buffer.discardReadBytes()
        return events
    }

    /// A whole message's bytes, inflated if it came compressed.
    private func message(_ payload: [UInt8], compressed isCompressed: Bool) -> [UInt8] {
        guard isCompressed else { return payload }
        compressed.withLockedValue { $0 += 1 }
        if inflater == nil { inflater = try? Inflater() }
        guard let inflater, let output = inflater.inflate(ByteBuffer(bytes: payload)) else { return Array("<corrupt compressed message>".utf8) }
        return Array(output.readableBytesView)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let continuation = handshake.withLockedValue { value in
            defer { value = nil }
            return value
        }
        continuation?.resume(throwing: ChatClientError("connection closed during the upgrade"))
        events.push(.disconnected)
        context.fireChannelInactive()
    }
}
