import Foundation
import NIOCore
import NIOPosix

/// An HTTP response as the client read it.
public struct HTTPResult: Sendable {
    /// Status code, e.g. 200.
    public var status: Int
    /// Header fields in order; names as sent.
    public var headers: [(name: String, value: String)]
    /// The body as text.
    public var body: String

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// A client error: the server could not be reached or answered something unreadable.
public struct ChatClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One-shot HTTP/1.1 requests over SwiftNIO (`Connection: close`).
public enum ChatHTTP {
    /// Sends a request and reads the whole response.
    public static func request(
        _ method: String,
        host: String = "127.0.0.1",
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        body: String? = nil,
        timeout: Duration = .seconds(10)
    ) async throws -> HTTPResult {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        if let body { request += "Content-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + (body ?? "")
        let raw = try await exchange(host: host, port: port, bytes: ByteBuffer(string: request), timeout: timeout)
        return try parse(raw)
    }

    /// Posts a urlencoded form to `/send/`, as the original page did; the page adds a
    /// `name`, and a browser sends its cookies (`headers`).
    public static func send(
        port: Int, data: String?, channel: String?, name: String? = nil, headers: [(String, String)] = [], host: String = "127.0.0.1"
    ) async throws -> HTTPResult {
        var fields: [String] = []
        if let data { fields.append("data=\(formEncode(data))") }
        if let channel { fields.append("channel=\(formEncode(channel))") }
        if let name { fields.append("name=\(formEncode(name))") }
        return try await request(
            "POST", host: host, port: port, path: "/send/",
            headers: [("Content-Type", "application/x-www-form-urlencoded")] + headers,
            body: fields.joined(separator: "&")
        )
    }

    /// `application/x-www-form-urlencoded` encoding of one value.
    public static func formEncode(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "*"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "):
                out += "+"
            default:
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// Sends `bytes` and reads until the server closes, or (with `until`) until what
    /// was read contains that text (a stream that does not end).
    public static func exchange(host: String, port: Int, bytes: ByteBuffer, until: String? = nil, timeout: Duration) async throws -> ByteBuffer {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            group.addTask {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(bytes)
                    var all = ByteBuffer()
                    for try await var chunk in inbound {
                        all.writeBuffer(&chunk)
                        if let until, String(buffer: all).contains(until) { break }
                    }
                    return all
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ChatClientError("no complete response within \(timeout)")
            }
            let result = try await group.next()!
            group.cancelAll()
            return result
        }
    }

    public static func parse(_ raw: ByteBuffer) throws -> HTTPResult {
        let text = String(buffer: raw)
        guard let split = text.range(of: "\r\n\r\n") else { throw ChatClientError("incomplete HTTP response: \(text.prefix(200))") }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw ChatClientError("bad status line: \(lines[0])") }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return HTTPResult(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}

