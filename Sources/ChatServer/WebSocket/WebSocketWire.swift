import CompressNIO
import NIOCore

/// Encodes server-to-client WebSocket frames (RFC 6455 §5.2: FIN set, unmasked).
///
/// A whole frame — header and payload — goes into one buffer, so the hub can encode a
/// message once and write the same bytes to every socket.
enum WebSocketWire {
    static let text: UInt8 = 0x1
    static let binary: UInt8 = 0x2
    static let close: UInt8 = 0x8
    static let ping: UInt8 = 0x9
    static let pong: UInt8 = 0xA

    /// The RSV1 bit: set on the first frame of a message compressed with permessage-deflate.
    static let rsv1: UInt8 = 0x40

    /// One final frame with `opcode` and `payload`; `compressed` sets RSV1.
    static func frame(opcode: UInt8, payload: ByteBuffer, compressed: Bool = false) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: payload.readableBytes + 10)
        writeHeader(opcode: compressed ? opcode | rsv1 : opcode, length: payload.readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    /// Where the payload of a frame made by ``frame(opcode:payload:compressed:)`` starts.
    private static func headerLength(of frame: ByteBuffer) -> Int {
        switch frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self).map({ $0 & 0x7F }) {
        case 126: 4
        case 127: 10
        default: 2
        }
    }

    /// The payload length of a frame made here.
    static func payloadLength(of frame: ByteBuffer) -> Int {
        frame.readableBytes - headerLength(of: frame)
    }

    /// The same frame with its payload deflated (permessage-deflate, no context takeover).
    static func deflated(_ frame: ByteBuffer, with compressor: ZlibCompressor) throws -> ByteBuffer {
        let header = headerLength(of: frame)
        guard let first = frame.getInteger(at: frame.readerIndex, as: UInt8.self),
            let payload = frame.getSlice(at: frame.readerIndex + header, length: frame.readableBytes - header)
        else { return frame }
        return Self.frame(opcode: first & 0x0F, payload: try PerMessageDeflate.compress(payload, with: compressor), compressed: true)
    }

    /// One final text frame holding the UTF-8 bytes written by `body`.
    static func textFrame(estimatedLength: Int, _ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var payload = ByteBufferAllocator().buffer(capacity: estimatedLength)
        body(&payload)
        return frame(opcode: text, payload: payload)
    }

    /// A close frame with a status code and a reason cut to the 123 bytes a control frame allows.
    static func closeFrame(code: WebSocketCloseCode, reason: String) -> ByteBuffer {
        var payload = ByteBufferAllocator().buffer(capacity: 2 + min(reason.utf8.count, 123))
        payload.writeInteger(code.rawValue)
        var bytes = Array(reason.utf8.prefix(123))
        while !bytes.isEmpty && String(validating: bytes, as: UTF8.self) == nil { bytes.removeLast() }
        payload.writeBytes(bytes)
        return frame(opcode: close, payload: payload)
    }

    private static func writeHeader(opcode: UInt8, length: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | opcode)
        switch length {
        case ..<126:
            buffer.writeInteger(UInt8(length))
        case ..<65536:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }
}

/// The close codes the server sends (RFC 6455 §7.4.1).
struct WebSocketCloseCode: RawRepresentable, Hashable, Sendable {
    var rawValue: UInt16
    static let goingAway = Self(rawValue: 1001)
    static let protocolError = Self(rawValue: 1002)
    static let unsupportedData = Self(rawValue: 1003)
    static let invalidPayload = Self(rawValue: 1007)
    static let policyViolation = Self(rawValue: 1008)
    static let messageTooBig = Self(rawValue: 1009)
    static let tryAgainLater = Self(rawValue: 1013)
    /// chat.v2: a subscription's channel name (or resume) breaks the rules.
    static let badRequest = Self(rawValue: 4400)
    /// chat.v2: the broker cannot serve the channel now; subscribe again shortly.
    static let unavailable = Self(rawValue: 4503)
    /// A one-to-one room of two other people (chat.v1; the original protocol gets 403).
    static let privateRoom = Self(rawValue: 4403)
    /// The socket's person is banned from the room (the same code as a private room's:
    /// both say "not for you").
    static let banned = Self(rawValue: 4403)
    /// A capped room asked of a client with no identity (no valid `uid` cookie).
    static let identityRequired = Self(rawValue: 4401)
    /// Too many history reads (resumes) from the client's address (chat.v1; others get
    /// 429), or, for a chat.v2 subscription, too many subscriptions on the socket.
    static let tooManyRequests = Self(rawValue: 4429)
    /// The room holds as many people as its cap (chat.v1; the original protocol gets 403).
    static let roomFull = Self(rawValue: 4409)
}
