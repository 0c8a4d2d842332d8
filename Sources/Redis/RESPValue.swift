import NIOCore

/// One reply from Redis, in RESP2 terms.
public enum RESPValue: Sendable, Hashable {
    /// `+OK` and other status replies.
    case simpleString(String)
    /// `-ERR …`: the server refused the command.
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$5\r\nhello`: binary-safe bytes.
    case bulkString(ByteBuffer)
    /// `$-1` or `*-1`: no value.
    case null
    /// `*2\r\n…`: nested replies.
    case array([RESPValue])

    /// The reply as text, for status and bulk replies.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes): String(buffer: bytes)
        default: nil
        }
    }

    /// The reply as an integer, for integer replies and bulk replies holding digits.
    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString(let bytes): Int64(String(buffer: bytes))
        default: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RESPValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}
