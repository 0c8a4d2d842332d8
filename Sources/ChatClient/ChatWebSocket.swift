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

    private let handler: ClientFrameHandler

    private init(channel: any Channel, subprotocol: String?, extensions: String?, events: EventQueue<Event>, handler: ClientFrameHandler) {
        self.channel = channel
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.events = events
        self.handler = handler
    }

    /// Messages that arrived compressed (permessage-deflate) and were inflated.
    public var compressedMessages: Int { handler.compressedMessages }

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
        let handler = ClientFrameHandler(events: events, handshake: handshake, answerPings: answerPings)
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if let receiveBufferSize {
            // A small kernel buffer makes a reader that stops reading fall behind quickly.
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBufferSize))
        }
        let channel = try await bootstrap
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port).get()
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if !subprotocols.isEmpty { request += "Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))\r\n" }
        if !extensions.isEmpty { request += "Sec-WebSocket-Extensions: \(extensions.joined(separator: ", "))\r\n" }
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        let upgradeRequest = ByteBuffer(string: request)
        let result: HandshakeResult = try await withThrowingTaskGroup(of: HandshakeResult.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { continuation in
                    handshake.withLockedValue { $0 = continuation }
                    channel.writeAndFlush(upgradeRequest, promise: nil)
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
        return ChatWebSocket(channel: channel, subprotocol: result.subprotocol, extensions: result.extensions, events: events, handler: handler)
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

/// Parses the upgrade response, then server frames (unmasked), into events.
private final class ClientFrameHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let events: EventQueue<Event>
    private let handshake: NIOLockedValueBox<CheckedContinuation<HandshakeResult, any Error>?>
    private let state = NIOLockedValueBox(State())

    typealias Event = ChatWebSocket.Event

    struct State {
        var buffer = ByteBuffer()
        var upgraded = false
        var fragments: [UInt8] = []
        var fragmentOpcode: UInt8?
        var fragmentsCompressed = false
        var compressedMessages = 0
    }

    var compressedMessages: Int { state.withLockedValue { $0.compressedMessages } }

    private let answerPings: Bool

    init(events: EventQueue<Event>, handshake: NIOLockedValueBox<CheckedContinuation<HandshakeResult, any Error>?>, answerPings: Bool) {
        self.events = events
        self.handshake = handshake
        self.answerPings = answerPings
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        let parsed: [Event] = state.withLockedValue { state in
            state.buffer.writeBuffer(&chunk)
            if !state.upgraded {
                let text = String(buffer: state.buffer)
                guard let end = text.range(of: "\r\n\r\n") else { return [] }
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
                if status != 101 && state.buffer.readableBytes < headBytes + contentLength { return [] }
                state.buffer.moveReaderIndex(forwardBy: headBytes)
                let body = status == 101 ? "" : (state.buffer.readString(length: contentLength) ?? "")
                state.upgraded = true
                let continuation = handshake.withLockedValue { value in
                    defer { value = nil }
                    return value
                }
                continuation?.resume(returning: HandshakeResult(status: status, subprotocol: subprotocol, extensions: extensions, body: body))
            }
            return Self.frames(from: &state)
        }
        for event in parsed {
            if answerPings, case .ping(let payload) = event {
                context.writeAndFlush(NIOAny(ChatWebSocket.maskedFrame(opcode: 0xA, payload: payload)), promise: nil)
            }
            events.push(event)
        }
    }

    private static func frames(from state: inout State) -> [Event] {
        var events: [Event] = []
        while state.buffer.readableBytes >= 2 {
            let start = state.buffer.readerIndex
            let first = state.buffer.getInteger(at: start, as: UInt8.self)!
            let second = state.buffer.getInteger(at: start + 1, as: UInt8.self)!
            var length = Int(second & 0x7F)
            var offset = 2
            if length == 126 {
                guard let value = state.buffer.getInteger(at: start + 2, as: UInt16.self) else { break }
                length = Int(value)
                offset = 4
            } else if length == 127 {
                guard let value = state.buffer.getInteger(at: start + 2, as: UInt64.self) else { break }
                length = Int(value)
                offset = 10
            }
            guard state.buffer.readableBytes >= offset + length else { break }
            let payload = state.buffer.getBytes(at: start + offset, length: length) ?? []
            state.buffer.moveReaderIndex(forwardBy: offset + length)
            let fin = first & 0x80 != 0
            let compressed = first & 0x40 != 0
            let opcode = first & 0x0F
            switch opcode {
            case 0x0:
                state.fragments += payload
                if fin, let kind = state.fragmentOpcode {
                    let message = Self.message(state.fragments, compressed: state.fragmentsCompressed, state: &state)
                    events.append(kind == 0x1 ? .text(String(decoding: message, as: UTF8.self)) : .binary(message))
                    state.fragments = []
                    state.fragmentOpcode = nil
                }
            case 0x1, 0x2:
                if fin {
                    let message = Self.message(payload, compressed: compressed, state: &state)
                    events.append(opcode == 0x1 ? .text(String(decoding: message, as: UTF8.self)) : .binary(message))
                } else {
                    state.fragmentOpcode = opcode
                    state.fragments = payload
                    state.fragmentsCompressed = compressed
                }
            case 0x8:
                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
                events.append(.close(code: code, reason: String(decoding: payload.dropFirst(2), as: UTF8.self)))
            case 0x9: events.append(.ping(payload))
            case 0xA: events.append(.pong(payload))
            default: break
            }
        }
        state.buffer.discardReadBytes()
        return events
    }

    /// A whole message's bytes, inflated if it came compressed (RFC 7692, no context takeover).
    private static func message(_ payload: [UInt8], compressed: Bool, state: inout State) -> [UInt8] {
        guard compressed else { return payload }
        state.compressedMessages += 1
        var input = ByteBuffer(bytes: payload + [0x00, 0x00, 0xFF, 0xFF])
        guard let inflater = try? ZlibDecompressor(algorithm: .deflate, windowSize: 15),
            let output = try? input.decompressStream(with: inflater)
        else { return Array("<corrupt compressed message>".utf8) }
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
