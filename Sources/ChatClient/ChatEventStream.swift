import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A Server-Sent Events client for `GET /events`, over SwiftNIO: reads the answer's head,
/// then parses `text/event-stream` as the HTML standard says a browser does, keeping the
/// last event id across events as `EventSource` does.
public final class ChatEventStream: Sendable {
    /// One dispatched event, or a comment line.
    public struct Event: Sendable, Equatable {
        /// `event:` (`message` when the event named none); `":"` for a comment.
        public var name: String
        /// `data:` lines joined by line feeds; a comment's text.
        public var data: String
        /// The last event id when it was dispatched (what a reconnect sends back).
        public var lastEventID: String
    }

    /// The answer's status and head, once read.
    public let status: Int
    public let head: HTTPResult
    private let events: EventQueue<Event?>
    private let channel: any Channel

    private init(status: Int, head: HTTPResult, events: EventQueue<Event?>, channel: any Channel) {
        self.status = status
        self.head = head
        self.events = events
        self.channel = channel
    }

    /// Opens `path` (e.g. `/events?channel=general`). A refusal comes back as a stream
    /// whose ``status`` is not 200 and whose ``head`` holds the body.
    public static func connect(
        port: Int, path: String, headers: [(String, String)] = [], host: String = "127.0.0.1", receiveBuffer: Int? = nil
    ) async throws -> ChatEventStream {
        let events = EventQueue<Event?>()
        let heads = EventQueue<HTTPResult>()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(5))
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: .init(receiveBuffer))
        }
        let channel = try await bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(Reader(events: events, heads: heads))
            }
        }.connect(host: host, port: port).get()
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request))
        guard let head = await heads.next(timeout: .seconds(10)) else {
            channel.close(promise: nil)
            throw ChatClientError("no answer to GET \(path)")
        }
        return ChatEventStream(status: head.status, head: head, events: events, channel: channel)
    }

    /// The next event or comment; `nil` after `timeout`, or once the stream has ended.
    public func next(timeout: Duration = .seconds(5)) async -> Event? {
        await events.next(timeout: timeout) ?? nil
    }

    /// The next event (comments skipped) named one of `names`, others skipped too.
    public func next(named names: Set<String>, timeout: Duration = .seconds(5)) async -> Event? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let event = await next(timeout: deadline - ContinuousClock.now) else { return nil }
            if names.contains(event.name) { return event }
        }
        return nil
    }

    /// Whether the server has ended the stream (within `timeout`).
    public func ended(within timeout: Duration) async -> Bool {
        let closed = EventQueue<Bool>()
        channel.closeFuture.whenComplete { _ in closed.push(true) }
        return await closed.next(timeout: timeout) ?? false
    }

    /// Stops reading (the socket's buffers fill: a slow reader), or reads again.
    public func pauseReading(_ paused: Bool) {
        let channel = self.channel
        channel.eventLoop.execute {
            channel.setOption(ChannelOptions.autoRead, value: !paused).whenComplete { _ in }
            if !paused { channel.read() }
        }
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Parses the head, then the events.
    private final class Reader: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let events: EventQueue<Event?>
        let heads: EventQueue<HTTPResult>
        var buffer = ByteBuffer()
        var headRead = false
        var eventName = ""
        var data: [String] = []
        var lastEventID = ""

        init(events: EventQueue<Event?>, heads: EventQueue<HTTPResult>) {
            self.events = events
            self.heads = heads
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            buffer.writeBuffer(&chunk)
            if !headRead {
                let view = buffer.readableBytesView
                guard let end = view.firstRange(of: "\r\n\r\n".utf8) else { return }
                let headBytes = buffer.readSlice(length: end.upperBound - view.startIndex)!
                headRead = true
                if let head = try? ChatHTTP.parse(headBytes), head.status != 200 {
                    // A refusal: the body follows the head; read it all.
                    var whole = headBytes
                    whole.writeBuffer(&buffer)
                    pending = whole
                    return
                }
                heads.push((try? ChatHTTP.parse(headBytes)) ?? HTTPResult(status: 0, headers: [], body: ""))
            }
            if var pending {
                pending.writeBuffer(&buffer)
                self.pending = pending
                return
            }
            while let line = nextLine() { take(line) }
        }

        /// A refusal's bytes, until the server closes.
        var pending: ByteBuffer?

        func channelInactive(context: ChannelHandlerContext) {
            if let pending { heads.push((try? ChatHTTP.parse(pending)) ?? HTTPResult(status: 0, headers: [], body: "")) }
            events.push(nil)
            context.fireChannelInactive()
        }

        private func nextLine() -> String? {
            let view = buffer.readableBytesView
            guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            var line = buffer.readString(length: newline - view.startIndex)!
            buffer.moveReaderIndex(forwardBy: 1)
            if line.hasSuffix("\r") { line.removeLast() }
            return line
        }

        private func take(_ line: String) {
            if line.isEmpty {
                if !data.isEmpty {
                    events.push(Event(name: eventName.isEmpty ? "message" : eventName, data: data.joined(separator: "\n"), lastEventID: lastEventID))
                }
                eventName = ""
                data = []
                return
            }
            if line.hasPrefix(":") {
                events.push(Event(name: ":", data: String(line.dropFirst().drop { $0 == " " }), lastEventID: lastEventID))
                return
            }
            let field: Substring
            var value: Substring
            if let colon = line.firstIndex(of: ":") {
                field = line[..<colon]
                value = line[line.index(after: colon)...]
                if value.first == " " { value = value.dropFirst() }
            } else {
                field = line[...]
                value = ""
            }
            switch field {
            case "event": eventName = String(value)
            case "data": data.append(String(value))
            case "id" where !value.contains("\0"): lastEventID = String(value)
            default: break
            }
        }
    }
}
