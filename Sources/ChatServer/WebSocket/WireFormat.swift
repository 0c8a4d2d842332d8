import Chat
import NIOCore

/// How a socket receives messages, chosen by the WebSocket subprotocol it asked for.
enum WireFormat: Int, Sendable, CaseIterable {
    /// No subprotocol: each message is one text frame holding exactly `data`, as the
    /// original app sent it.
    case raw = 0
    /// Subprotocol `chat.v1`: JSON frames with a `type` (docs/PROTOCOL.md).
    case chatV1 = 1

    /// The `Sec-WebSocket-Protocol` value of `chat.v1`.
    static let chatV1Name = "chat.v1"

    /// Picks the format from the subprotocols a client offered; `nil` if it offered
    /// only ones the server does not speak.
    init?(offered: [String]) {
        if offered.isEmpty {
            self = .raw
        } else if offered.contains(Self.chatV1Name) {
            self = .chatV1
        } else {
            return nil
        }
    }

    /// Every format's frame of `message`, indexed by `rawValue`: made once per message.
    static func frames(of message: Message) -> [ByteBuffer] {
        [
            WebSocketWire.frame(opcode: WebSocketWire.text, payload: message.data),
            WebSocketWire.textFrame(estimatedLength: message.data.readableBytes + 128) { json in
                ChatV1.writeMessage(message, into: &json)
            },
        ]
    }
}

/// The JSON frames of `chat.v1`.
enum ChatV1 {
    static func writeMessage(_ message: Message, into json: inout ByteBuffer) {
        json.writeStaticString(#"{"type":"message","channel":"#)
        JSON.writeString(message.channel.rawValue, into: &json)
        json.writeStaticString(#","offset":"#)
        json.writeString(String(message.offset))
        json.writeStaticString(#","epoch":"#)
        JSON.writeString(message.epoch, into: &json)
        json.writeStaticString(#","time":"#)
        json.writeString(String(message.time))
        json.writeStaticString(#","data":"#)
        JSON.writeString(message.data.readableBytesView, into: &json)
        json.writeStaticString("}")
    }

    static func pong() -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 16) { $0.writeStaticString(#"{"type":"pong"}"#) }
    }

    static func error(_ text: String) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: text.utf8.count + 32) { json in
            json.writeStaticString(#"{"type":"error","message":"#)
            JSON.writeString(text, into: &json)
            json.writeStaticString("}")
        }
    }
}

/// Writes JSON strings without Foundation, straight from UTF-8 bytes.
enum JSON {
    static func writeString(_ text: String, into buffer: inout ByteBuffer) {
        writeString(text.utf8, into: &buffer)
    }

    static func writeString<Bytes: Sequence<UInt8>>(_ bytes: Bytes, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            case 0..<0x20:
                buffer.writeStaticString("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default:
                buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
