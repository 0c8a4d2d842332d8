import NIOCore

/// One Redis command, ready to be written as a RESP array of bulk strings.
public struct RedisCommand: Sendable, CustomStringConvertible {
    /// The command name and its arguments, as Redis receives them.
    public var arguments: [ByteBuffer]

    /// Creates a command from its name and arguments.
    public init(_ name: String, _ arguments: [RedisArgument] = []) {
        self.arguments = [ByteBuffer(string: name)] + arguments.map(\.bytes)
    }

    /// Creates a command from its name and arguments.
    public init(_ name: String, _ arguments: RedisArgument...) {
        self.init(name, arguments)
    }

    /// Writes the command as RESP into `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        buffer.writeString(String(arguments.count))
        buffer.writeStaticString("\r\n")
        for argument in arguments {
            buffer.writeStaticString("$")
            buffer.writeString(String(argument.readableBytes))
            buffer.writeStaticString("\r\n")
            buffer.writeImmutableBuffer(argument)
            buffer.writeStaticString("\r\n")
        }
    }

    /// The command name only: arguments may hold passwords or user data.
    public var description: String {
        arguments.first.map { String(buffer: $0) } ?? "(empty)"
    }
}

/// One argument of a ``RedisCommand``.
public struct RedisArgument: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    /// The argument's bytes.
    public var bytes: ByteBuffer

    /// Text, sent as UTF-8.
    public static func string(_ text: String) -> Self { Self(bytes: ByteBuffer(string: text)) }
    /// Bytes, sent as they are.
    public static func bytes(_ bytes: ByteBuffer) -> Self { Self(bytes: bytes) }
    /// An integer, sent in decimal.
    public static func integer<I: BinaryInteger>(_ value: I) -> Self { .string(String(value)) }

    init(bytes: ByteBuffer) { self.bytes = bytes }
    public init(stringLiteral value: String) { self.bytes = ByteBuffer(string: value) }
    public init(integerLiteral value: Int) { self.bytes = ByteBuffer(string: String(value)) }
}
