import CompressNIO
import NIOCore
import NIOWebSocket

/// Turns a client's frames into whole messages and checks them against RFC 6455.
///
/// Pure logic, no socket: fed one frame at a time, it answers what the socket should
/// do. Fragmented messages are joined; text must be valid UTF-8; a message may not
/// exceed `maximumMessageSize` (after inflating, for a compressed one); client frames
/// must be masked. With permessage-deflate negotiated (an `inflater`), RSV1 on a
/// message's first frame marks it compressed.
struct MessageAssembler {
    /// What to do with a frame.
    enum Outcome: Equatable {
        /// Nothing yet (a fragment of an unfinished message).
        case none
        /// A whole text message arrived.
        case text(String)
        /// A whole binary message arrived.
        case binary(ByteBuffer)
        /// Answer a ping with a pong carrying this payload.
        case ping(ByteBuffer)
        /// A pong arrived.
        case pong
        /// The client closed; echo its code (or none).
        case close(code: UInt16?)
        /// Close the connection with this code and reason.
        case fail(WebSocketCloseCode, String)
    }

    let maximumMessageSize: Int
    private let inflater: PerMessageDeflate.Inflater?
    private var fragments: ByteBuffer?
    private var fragmentOpcode: WebSocketOpcode?
    private var fragmentsCompressed = false

    init(maximumMessageSize: Int, inflater: PerMessageDeflate.Inflater? = nil) {
        self.maximumMessageSize = maximumMessageSize
        self.inflater = inflater
    }

    mutating func receive(_ frame: WebSocketFrame) -> Outcome {
        guard frame.maskKey != nil else { return .fail(.protocolError, "client frames must be masked") }
        guard !frame.rsv2 && !frame.rsv3 else {
            return .fail(.protocolError, "reserved bits set but no extension was negotiated")
        }
        if frame.rsv1 {
            guard inflater != nil else {
                return .fail(.protocolError, "reserved bits set but no extension was negotiated")
            }
            guard frame.opcode == .text || frame.opcode == .binary else {
                return .fail(.protocolError, "only a message's first frame may be marked compressed")
            }
        }
        var data = frame.unmaskedData
        switch frame.opcode {
        case .ping:
            guard frame.fin else { return .fail(.protocolError, "control frames cannot be fragmented") }
            return .ping(data)
        case .pong:
            guard frame.fin else { return .fail(.protocolError, "control frames cannot be fragmented") }
            return .pong
        case .connectionClose:
            guard frame.fin else { return .fail(.protocolError, "control frames cannot be fragmented") }
            switch data.readableBytes {
            case 0:
                return .close(code: nil)
            case 1:
                return .fail(.protocolError, "a close frame's payload cannot be one byte")
            default:
                let code = data.readInteger(as: UInt16.self)!
                guard Self.isValidReceivedCloseCode(code) else { return .fail(.protocolError, "close code \(code) is not allowed") }
                guard String(validating: data.readableBytesView, as: UTF8.self) != nil else {
                    return .fail(.invalidPayload, "the close reason is not valid UTF-8")
                }
                return .close(code: code)
            }
        case .text, .binary:
            guard fragmentOpcode == nil else {
                return .fail(.protocolError, "a new message started before the previous one finished")
            }
            guard data.readableBytes <= maximumMessageSize else { return tooBig() }
            if frame.fin { return complete(opcode: frame.opcode, data, compressed: frame.rsv1) }
            fragmentOpcode = frame.opcode
            fragments = data
            fragmentsCompressed = frame.rsv1
            return .none
        case .continuation:
            guard let opcode = fragmentOpcode, var buffer = fragments else {
                return .fail(.protocolError, "a continuation frame arrived with no message to continue")
            }
            guard buffer.readableBytes + data.readableBytes <= maximumMessageSize else { return tooBig() }
            buffer.writeBuffer(&data)
            guard frame.fin else {
                fragments = buffer
                return .none
            }
            fragments = nil
            fragmentOpcode = nil
            return complete(opcode: opcode, buffer, compressed: fragmentsCompressed)
        default:
            return .fail(.protocolError, "unknown opcode \(frame.opcode)")
        }
    }

    private mutating func tooBig() -> Outcome {
        fragments = nil
        fragmentOpcode = nil
        return .fail(.messageTooBig, "messages are limited to \(maximumMessageSize) bytes")
    }

    private func complete(opcode: WebSocketOpcode, _ data: ByteBuffer, compressed: Bool) -> Outcome {
        var data = data
        if compressed, let inflater {
            do {
                data = try inflater.inflate(data, maximumSize: maximumMessageSize)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                return .fail(.messageTooBig, "messages are limited to \(maximumMessageSize) bytes (inflated)")
            } catch {
                return .fail(.invalidPayload, "the compressed message could not be inflated")
            }
        }
        if opcode == .binary { return .binary(data) }
        guard let text = String(validating: data.readableBytesView, as: UTF8.self) else {
            return .fail(.invalidPayload, "text messages must be valid UTF-8")
        }
        return .text(text)
    }

    /// Codes a peer may send (RFC 6455 §7.4): 1000–1003, 1007–1011, 3000–4999.
    static func isValidReceivedCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: true
        default: false
        }
    }
}
