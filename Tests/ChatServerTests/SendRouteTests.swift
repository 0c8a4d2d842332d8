import Chat
import ChatClient
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import NIOPosix
import Testing

@testable import ChatServer

/// `POST /send/` is served in the connection's pipeline, before the router: requests sent
/// back to back on one connection (pipelined) are answered in the order they came,
/// whichever of the two serves them, and one connection's messages keep their order.
@Suite("POST /send/ in the pipeline: pipelined requests, order, the router's answers between")
struct SendRouteTests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    static func post(_ data: String, to channel: String, headers: String = "") -> String {
        let body = "data=\(data)&channel=\(channel)"
        return "POST /send/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count)\r\n\(headers)\r\n\(body)"
    }

    /// The answers of a raw exchange, in order (each sized by its `Content-Length`).
    static func answers(_ raw: ByteBuffer) throws -> [HTTPResult] {
        var text = Substring(String(buffer: raw))
        var results: [HTTPResult] = []
        while let split = text.range(of: "\r\n\r\n") {
            let head = text[..<split.lowerBound]
            let length = head.components(separatedBy: "\r\n").compactMap { line -> Int? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }.first ?? 0
            let bodyStart = split.upperBound
            let bodyEnd = text.utf8.index(bodyStart, offsetBy: length)
            results.append(try ChatHTTP.parse(ByteBuffer(string: String(text[..<bodyEnd]))))
            text = text[bodyEnd...]
        }
        return results
    }

    static func exchange(_ port: Int, _ requests: [String]) async throws -> [HTTPResult] {
        let raw = try await ChatHTTP.exchange(host: "127.0.0.1", port: port, bytes: ByteBuffer(string: requests.joined()), timeout: .seconds(20))
        return try answers(raw)
    }

    /// Sends `requests`, ends its output (a half-close, as `nc -N` does), reads to the end.
    static func exchangeHalfClosing(_ port: Int, _ requests: [String]) async throws -> [HTTPResult] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let raw = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: requests.joined()))
            outbound.finish()
            var all = ByteBuffer()
            for try await var chunk in inbound { all.writeBuffer(&chunk) }
            return all
        }
        return try answers(raw)
    }

    static func history(_ port: Int, _ channel: String) async throws -> [String] {
        let history = try await ChatHTTP.request("GET", port: port, path: "/history?channel=\(channel)&since=0&limit=1000").body
        let messages = try #require(JSONSerialization.jsonObject(with: Data(history.utf8)) as? [String: Any])["messages"] as? [[String: Any]]
        return messages?.compactMap { $0["data"] as? String } ?? []
    }

    @Test(arguments: brokers)
    func aClientThatEndsItsInputIsAnsweredEveryRequestItSent(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            for count in [1, 5, 100] {
                let channel = uniqueChannel("half")
                var requests = (1...count).map { Self.post("h\($0)", to: channel) }
                if count == 5 { requests.insert("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", at: 2) }
                let answers = try await Self.exchangeHalfClosing(server.port, requests)
                #expect(answers.count == requests.count, "\(count): \(answers.map(\.status))")
                #expect(answers.allSatisfy { $0.status == 200 })
                #expect(try await Self.history(server.port, channel) == (1...count).map { "h\($0)" })
            }
        }
    }

    @Test func aSignedInPersonsPipelinedMessagesKeepTheirOrder() async throws {
        try await withServer(broker: .memory, SignInTests.signedIn()) { server in
            let channel = uniqueChannel("jwt")
            let token = Minter.hs256(Minter.claims("alice"))
            var requests = (1...60).map { Self.post("j\($0)", to: channel, headers: "Authorization: Bearer \(token)\r\n") }
            requests.insert(Self.post("anonymous", to: channel), at: 30)
            let answers = try await Self.exchangeHalfClosing(server.port, requests)
            #expect(answers.count == 61 && answers.allSatisfy { $0.status == 200 })
            let offsets = answers.compactMap { $0.header("chat-offset").flatMap(Int.init) }
            #expect(offsets == offsets.sorted())
            var expected = (1...60).map { "j\($0)" }
            expected.insert("anonymous", at: 30)
            #expect(try await Self.history(server.port, channel) == expected)
        }
    }

    @Test(arguments: brokers)
    func aSendersNewChannelAllowanceIsTheirsAlone(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, {
            $0.trustedProxies = "127.0.0.1"
            $0.newChannelRate = RateLimit(rate: 1, burst: 1)
        }) { server in
            let a = "X-Forwarded-For: 10.0.0.1\r\n"
            #expect(try await Self.exchange(server.port, [Self.post("a", to: uniqueChannel("first"), headers: a + "Connection: close\r\n")]).map(\.status) == [200])
            // In one batch: A may create no more channels, B may.
            let channel = uniqueChannel("new")
            let answers = try await Self.exchangeHalfClosing(server.port, [
                Self.post("from-A", to: channel, headers: a), Self.post("from-B", to: channel, headers: "X-Forwarded-For: 10.0.0.2\r\n"),
            ])
            #expect(answers.map(\.status) == [429, 200])
            #expect(try await Self.history(server.port, channel) == ["from-B"])
        }
    }

    @Test func aMalformedRequestIsAnsweredAfterTheAnswersBeforeIt() async throws {
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel("bad")
            let garbage = "GARBAGE\u{1} / HTTP/1.1\r\n\r\n"
            let health = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            let answers = try await Self.exchange(server.port, [Self.post("m1", to: channel), Self.post("m2", to: channel), garbage])
            #expect(answers.map(\.status) == [200, 200, 400])
            #expect(try await Self.history(server.port, channel) == ["m1", "m2"])
            // The router's answers too.
            #expect(try await Self.exchange(server.port, [health, garbage]).map(\.status) == [200, 400])
            #expect(try await Self.exchange(server.port, [Self.post("m3", to: channel), health, garbage]).map(\.status) == [200, 200, 400])
            // After a request that ends the connection, nothing: its answer is the last.
            let closing = try await Self.exchange(server.port, ["GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", health])
            #expect(closing.map(\.status) == [200])
            let closingSend = try await Self.exchange(server.port, [Self.post("m4", to: channel, headers: "Connection: keep-alive, close\r\n"), health])
            #expect(closingSend.map(\.status) == [200])
        }
    }

    @Test(arguments: brokers)
    func aRequestAfterABodyTooLargeGoesNowhereAndTheAnswersBeforeItCome(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.maximumBodySize = 1000; $0.maximumMessageSize = 500 }) { server in
            let channel = uniqueChannel("after413")
            let big = "channel=\(channel)&data=" + String(repeating: "x", count: 1500)
            let chunks = stride(from: 0, to: big.utf8.count, by: 300).map { start -> String in
                let piece = String(big.dropFirst(start).prefix(300))
                return String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n"
            }.joined()
            let chunked = "POST /send/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + "0\r\n\r\n"
            for after in ["GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Self.post("never", to: channel)] {
                let answers = try await Self.exchange(server.port, [Self.post("a1", to: channel), chunked, after])
                #expect(answers.map(\.status) == [200, 413])
            }
            #expect(try await Self.history(server.port, channel) == ["a1", "a1"])
        }
    }

    @Test(arguments: brokers)
    func pipelinedRequestsAreAnsweredInOrderWithTheRoutersBetween(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("pipe")
            let requests = [
                Self.post("m1", to: channel), Self.post("m2", to: channel), Self.post("m3", to: channel),
                "GET /history?channel=\(channel) HTTP/1.1\r\nHost: x\r\n\r\n",
                Self.post("m4", to: channel), Self.post("", to: channel), Self.post("m5", to: channel),
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                Self.post("m6", to: channel, headers: "Connection: close\r\n"),
            ]
            let answers = try await Self.exchange(server.port, requests)
            try #require(answers.count == requests.count, "\(answers.map(\.status))")
            #expect(answers.map(\.status) == [200, 200, 200, 200, 200, 400, 200, 200, 200])
            #expect(answers[0...2].map { $0.header("chat-offset") } == ["1", "2", "3"])
            // The router's answer waited for the sends before it: the history has all three.
            #expect(answers[3].body.contains(#""lastOffset":3"#), "\(answers[3].body)")
            #expect(answers[4].header("chat-offset") == "4")
            #expect(answers[5].body.hasPrefix("Missing message"))
            #expect(answers[6].header("chat-offset") == "5")
            #expect(answers[8].header("chat-offset") == "6")
            #expect(answers[8].header("connection") == "close")
            for answer in answers { #expect(answer.header("date") != nil) }
        }
    }

    @Test(arguments: brokers)
    func oneConnectionsMessagesKeepTheirOrderPastThePipelineLimit(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("order")
            let count = SendRouteState.maximumPipelined * 3 + 7
            var requests = (1...count).map { Self.post("n\($0)", to: channel) }
            requests[count - 1] = Self.post("n\(count)", to: channel, headers: "Connection: close\r\n")
            let answers = try await Self.exchange(server.port, requests)
            try #require(answers.count == count)
            #expect(answers.allSatisfy { $0.status == 200 })
            #expect(answers.compactMap { $0.header("chat-offset").flatMap(Int.init) } == Array(1...count))
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=0&limit=1000").body
            let texts = try #require(JSONSerialization.jsonObject(with: Data(history.utf8)) as? [String: Any])["messages"] as? [[String: Any]]
            #expect(texts?.compactMap { $0["data"] as? String } == (1...count).map { "n\($0)" })
        }
    }

    @Test(arguments: brokers)
    func manyConnectionsAtOnceEachKeepTheirOrder(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("many")
            let (connections, each) = (24, 12)
            try await withThrowingTaskGroup(of: [HTTPResult].self) { group in
                for connection in 0..<connections {
                    group.addTask {
                        var requests = (1...each).map { Self.post("c\(connection)-\($0)", to: channel) }
                        requests[each - 1] = Self.post("c\(connection)-\(each)", to: channel, headers: "Connection: close\r\n")
                        return try await Self.exchange(server.port, requests)
                    }
                }
                for try await answers in group {
                    #expect(answers.count == each && answers.allSatisfy { $0.status == 200 })
                    let offsets = answers.compactMap { $0.header("chat-offset").flatMap(Int.init) }
                    #expect(offsets == offsets.sorted(), "one connection's messages keep their order")
                }
            }
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=0&limit=1000").body
            let messages = try #require(JSONSerialization.jsonObject(with: Data(history.utf8)) as? [String: Any])["messages"] as? [[String: Any]]
            let texts = messages?.compactMap { $0["data"] as? String } ?? []
            #expect(texts.count == connections * each)
            for connection in 0..<connections {
                let own = texts.filter { $0.hasPrefix("c\(connection)-") }
                #expect(own == (1...each).map { "c\(connection)-\($0)" })
            }
        }
    }

    @Test func aBodyTooLargeMidPipelineEndsTheConnectionAfterTheAnswersBeforeIt() async throws {
        try await withServer(broker: .memory, { $0.maximumBodySize = 200 }) { server in
            let channel = uniqueChannel("large")
            let requests = [
                Self.post("a", to: channel), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                "POST /send/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + String(repeating: "x", count: 300),
            ]
            let answers = try await Self.exchange(server.port, requests)
            #expect(answers.map(\.status) == [200, 200, 413])
            #expect(answers.last?.header("connection") == "close")
            #expect(answers.last?.body.contains("larger than 200 bytes") == true)
            // A chunked body that grows past the limit is refused as it arrives.
            let chunked = try await Self.exchange(server.port, [
                "POST /send/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + String(repeating: "y", count: 256) + "\r\n",
            ])
            #expect(chunked.map(\.status) == [413])
            // Nothing after it is served: its messages could never be answered.
            let after = try await Self.exchange(server.port, [
                Self.post("b1", to: channel),
                "POST /send/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + String(repeating: "y", count: 256) + "\r\n0\r\n\r\n",
                Self.post("b3", to: channel), Self.post("b4", to: channel),
            ])
            #expect(after.map(\.status) == [200, 413])
            #expect(try await Self.history(server.port, channel) == ["a", "b1"])
            #expect(try await ChatHTTP.send(port: server.port, data: "still here", channel: channel).status == 200)
        }
    }

    @Test func anEventStreamAfterPipelinedSendsStartsOnceTheirAnswersAreOut() async throws {
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel("thenevents")
            let raw = try await ChatHTTP.exchange(
                host: "127.0.0.1", port: server.port,
                bytes: ByteBuffer(string: Self.post("s1", to: channel) + Self.post("s2", to: channel) + "GET /events?channel=\(channel) HTTP/1.1\r\nHost: x\r\n\r\n"),
                until: "event: ", timeout: .seconds(10)
            )
            let text = String(buffer: raw)
            let okAt = try #require(text.range(of: "Chat-Offset: 2")).lowerBound
            let streamAt = try #require(text.range(of: "text/event-stream")).lowerBound
            #expect(okAt < streamAt, "the sends' answers, then the stream: \(text.prefix(600))")
        }
    }

    @Test func otherMethodsAndPathsGoToTheRouterAsBefore() async throws {
        try await withServer(broker: .memory) { server in
            for method in ["GET", "HEAD", "PUT", "DELETE"] {
                // The router's answer for a path it knows under another method.
                let answer = try await ChatHTTP.request(method, port: server.port, path: "/send/")
                #expect(answer.status == 405 && answer.header("allow") == "POST, OPTIONS", "\(method)")
            }
            #expect(try await ChatHTTP.request("POST", port: server.port, path: "/sendx").status == 404)
            #expect(try await ChatHTTP.request("POST", port: server.port, path: "/send/more").status == 404)
            for path in ["/send", "//send/", "/send/?data=q&channel=c"] {
                #expect(try await ChatHTTP.request("POST", port: server.port, path: path, body: "data=x").status == 200, "\(path)")
            }
            let preflight = try await ChatHTTP.request("OPTIONS", port: server.port, path: "/send/")
            #expect(preflight.status == 204)
            #expect(preflight.header("access-control-allow-methods") == "POST,GET,PUT,DELETE")
        }
    }

    // MARK: The order, without sockets

    private static func head(ours: Bool) -> SendRouteState.Part {
        .head(.head(.init(method: ours ? .post : .get, scheme: nil, authority: nil, path: ours ? "/send/" : "/")), ours: ours)
    }

    private static let end = SendRouteState.Part.end(.end(nil))
    private static let ok = SendController.Answer(.ok, headers: [:], body: "ok")

    @Test func theRoutersRequestWaitsForTheRoutesAnswersAndTheRouteForTheRouters() {
        var state = SendRouteState()
        #expect(state.read(Self.head(ours: true)) == .start(request: 0))
        #expect(state.read(.body(ByteBuffer(string: "data=a"))) == .collect)
        #expect(state.read(Self.end) == .serve(request: 0))
        #expect(state.read(Self.head(ours: true)) == .start(request: 1))
        #expect(state.read(Self.end) == .serve(request: 1))
        // The router's request, and everything after it, waits.
        #expect(state.read(Self.head(ours: false)) == .hold)
        #expect(state.read(Self.end) == .hold)
        #expect(state.read(Self.head(ours: true)) == .hold)
        #expect(state.pausesReading)
        // Answers leave in order: the second's waits for the first's.
        #expect(state.answered(1, with: Self.ok).isEmpty)
        #expect(state.takeHeld().isEmpty)
        #expect(state.answered(0, with: Self.ok).count == 2)
        let held = state.takeHeld()
        #expect(held.count == 3)
        #expect(!state.pausesReading)
        // Read again: the router's goes on; the route's next waits for the router's answer.
        #expect(state.read(held[0]) == .forward)
        #expect(state.read(held[1]) == .forward)
        #expect(state.read(held[2]) == .hold)
        #expect(state.takeHeld().isEmpty)
        state.routerAnswered()
        let again = state.takeHeld()
        #expect(again.count == 1)
        #expect(state.read(again[0]) == .start(request: 2))
    }

    @Test func aRequestRefusedByItsHeadHasItsBodyDropped() {
        var state = SendRouteState()
        #expect(state.read(Self.head(ours: true)) == .start(request: 0))
        #expect(state.answered(0, with: Self.ok).count == 1)
        #expect(state.read(.body(ByteBuffer(string: "x"))) == .drop)
        #expect(state.read(Self.end) == .drop)
        #expect(state.read(Self.head(ours: false)) == .forward)
    }

    @Test func readingPausesWhenEnoughRequestsWait() {
        var state = SendRouteState()
        for request in 0..<SendRouteState.maximumPipelined {
            #expect(!state.pausesReading)
            #expect(state.read(Self.head(ours: true)) == .start(request: request))
            #expect(state.read(Self.end) == .serve(request: request))
        }
        #expect(state.pausesReading)
        #expect(state.answered(0, with: Self.ok).count == 1)
        #expect(!state.pausesReading)
    }

    @Test func theDateHeaderIsTheIMFFixdate() {
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(1_796_185_662) == "Wed, 02 Dec 2026 04:27:42 GMT")
    }
}
