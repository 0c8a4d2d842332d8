/// An error from the Redis client: refused by the server, or the connection failed.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// Redis answered with an error reply; `message` is the server's text.
        public static let server = Code(name: "server")
        /// No connection to Redis right now; the client is reconnecting.
        public static let unavailable = Code(name: "unavailable")
        /// The connection closed before the reply arrived.
        public static let connectionClosed = Code(name: "connectionClosed")
        /// Redis did not answer within the command timeout.
        public static let timeout = Code(name: "timeout")
        /// The bytes from Redis were not valid RESP.
        public static let protocolError = Code(name: "protocolError")
        /// A reply of a shape the caller did not expect.
        public static let unexpectedReply = Code(name: "unexpectedReply")
        /// The Redis URL could not be understood.
        public static let invalidURL = Code(name: "invalidURL")
        /// The client was shut down.
        public static let shutdown = Code(name: "shutdown")
        public var description: String { name }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A message a person can act on; for `.server`, the server's own text.
    public var message: String
    /// The lower error that caused this one (a socket's, NIO's), if any.
    public var underlying: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - code: what kind of failure this is.
    ///   - message: what happened, for a person.
    ///   - underlying: the lower error that caused it, if any.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// The first word of a server error, e.g. `NOSCRIPT`, `WRONGPASS`, `ERR`.
    public var serverErrorPrefix: Substring? {
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    /// The code and the message; the underlying error too, unless the message quotes it.
    public var description: String {
        guard let underlying else { return "Redis \(code): \(message)" }
        let cause = "\(underlying)"
        return message.contains(cause) ? "Redis \(code): \(message)" : "Redis \(code): \(message) (\(cause))"
    }
}
