import Chat
import ChatClient
import ChatTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Redis
import Testing

@testable import ChatServer

#if canImport(Glibc)
import Glibc
#endif
// timespec and timeval: once a package that imports Foundation's CoreFoundation is linked
// in, their members are seen as CoreFoundation's.
#if canImport(CoreFoundation)
import CoreFoundation
#endif

/// What an attacker sent, each exactly as found (docs/SECURITY.md), and what it gets now:
/// a clear refusal, never a crash, while everyone else is served.
@Suite("Hostile input: what once crashed, starved or leaked")
struct HostileInputTests {
    /// The server still answers an ordinary publish after whatever the test sent.
    static func stillServes(_ server: TestServer, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let answer = try await ChatHTTP.send(port: server.port, data: "still here", channel: uniqueChannel())
        #expect(answer.status == 200, "the server still serves", sourceLocation: sourceLocation)
    }

    // MARK: Crashes

    @Test(arguments: [ChatConfiguration.BrokerKind.memory, .redis])
    func theLargestOffsetsAreRefusedNeverACrash(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            _ = try await ChatHTTP.send(port: server.port, data: "one", channel: channel)
            for since in ["9223372036854775807", "9223372036854775806", "9223372036854775808", "-1", "+5", "1e3", ""] {
                let answer = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=\(since)")
                #expect(answer.status == 400, "since=\(since)")
                #expect(answer.body.contains("since must be a whole number from 0 to \(Offset.maximum)"))
            }
            let largest = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=\(Offset.maximum)")
            #expect(largest.status == 200)
            #expect(largest.body.contains(#""messages":[]"#))
            for limit in ["9223372036854775807", "0", "-1"] {
                let answer = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&limit=\(limit)")
                #expect(answer.status == 400, "limit=\(limit)")
            }
            await #expect(throws: ChatWebSocket.Refused.self) {
                _ = try await ChatWebSocket.connect(
                    port: server.port, path: "/wb/?channel=\(channel)&since=9223372036854775807&epoch=x", subprotocols: ["chat.v1"]
                )
            }
            // The largest offset a client may name resumes as any other: not covered, so a reset.
            let socket = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/?channel=\(channel)&since=\(Offset.maximum)&epoch=x", subprotocols: ["chat.v1"]
            )
            #expect(try #require(await socket.nextText()).contains(#""type":"reset""#))
            await socket.disconnect()
            try await Self.stillServes(server)
        }
    }

    @Test func aMultipartPartWhoseHeadersEndAtTheDelimiterIsAnsweredNotACrash() async throws {
        try await withServer(broker: .memory) { server in
            let body = "--a\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n--a--\r\n"
            let answer = try await ChatHTTP.request(
                "POST", port: server.port, path: "/send/", headers: [("Content-Type", "multipart/form-data; boundary=a")], body: body
            )
            #expect(answer.status == 400)
            #expect(answer.body == "Missing message: send the text in the form field 'data'.\n")
            try await Self.stillServes(server)
        }
    }

    @Test func carelessExtensionOffersAreAnsweredNotACrash() async throws {
        try await withServer(broker: .memory) { server in
            for offer in ["permessage-deflate; =", "permessage-deflate; ", "permessage-deflate; ;client_no_context_takeover", "permessage-deflate;;", "; permessage-deflate"] {
                let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(uniqueChannel())", extensions: [offer])
                await socket.disconnect()
            }
            #expect(PerMessageDeflate.negotiate(["permessage-deflate; ="]) == nil, "a nameless parameter declines the offer")
            #expect(PerMessageDeflate.negotiate(["permessage-deflate; "]) == .init(clientNoContextTakeover: false), "an empty parameter is ignored")
            #expect(PerMessageDeflate.negotiate(["permessage-deflate; ;client_no_context_takeover"]) == .init(clientNoContextTakeover: true))
            try await Self.stillServes(server)
        }
    }

    // MARK: Starvation and amplification

    @Test func aBodyOfManyEmptyPartsIsRefusedAfterAHundredAndParsedInLinearTime() async throws {
        let parts = String(repeating: "--a\r\n", count: 69_000) + "--a--\r\n"
        let started = Self.threadCPUTime()
        #expect(throws: FormError.tooManyFields) { try Multipart.fields(Array(parts.utf8), boundary: "a") }
        // The same shape with fewer parts than the cap: every part read once.
        let allowed = String(repeating: "--a\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue\r\n", count: 100) + "--a--\r\n"
        let fields = try Multipart.fields(Array((allowed + String(repeating: "z", count: 1 << 20)).utf8), boundary: "a")
        #expect(fields.count == 100)
        // A quadratic parser took 4.8 s for the first body; a linear one takes milliseconds.
        #expect(Self.threadCPUTime() - started < 0.5, "CPU seconds spent parsing")
        #expect(throws: FormError.tooManyFields) { try FormData.pairs(String(repeating: "a=1&", count: 20_000)[...]) }
        try await withServer(broker: .memory) { server in
            let body = String(repeating: "--a\r\n", count: 40_000) + "--a--\r\n"
            let answer = try await ChatHTTP.request(
                "POST", port: server.port, path: "/send/", headers: [("Content-Type", "multipart/form-data; boundary=a")], body: body
            )
            #expect(answer.status == 400)
            #expect(answer.body == "The form has more than \(FormData.maximumFields) fields.\n")
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/healthz").status == 200)
        }
    }

    @Test func aHistoryAnswerIsBoundedInBytesAndTheRestIsReadPageByPage() async throws {
        try await withServer(broker: .memory, { $0.maximumHistoryBytes = 300_000 }) { server in
            let channel = uniqueChannel()
            // Quotes cost two bytes each in JSON: the worst text that is still allowed.
            let quotes = String(repeating: "\"", count: 60_000)
            for _ in 1...12 { #expect(try await ChatHTTP.send(port: server.port, data: quotes, channel: channel).status == 200) }
            let newest = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&limit=1000")
            #expect(newest.status == 200)
            #expect(newest.body.utf8.count <= 300_000 + 1000)
            let page = try JSONSerialization.jsonObject(with: Data(newest.body.utf8)) as? [String: Any]
            let offsets = (page?["messages"] as? [[String: Any]] ?? []).compactMap { $0["offset"] as? Int }
            #expect(offsets == [11, 12], "the newest that fit, oldest first")
            // Following `since` reaches every message, one bounded answer at a time.
            var since = 0
            var read: [Int] = []
            while read.count < 12 {
                let answer = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=\(since)&limit=1000")
                let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
                let got = (object?["messages"] as? [[String: Any]] ?? []).compactMap { $0["offset"] as? Int }
                #expect(answer.body.utf8.count <= 300_000 + 1000)
                guard let last = got.last else { break }
                read += got
                since = last
            }
            #expect(read == Array(1...12))
            // A message larger than the bound still comes, alone.
            let one = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=0&limit=1")
            #expect(one.body.contains(#""offset":1"#))
        }
    }

    @Test func readersThatNeverReadHoldLittleMemoryAndNeverHoldUpPublishing() async throws {
        try await withServer(broker: .redis, { $0.trustedProxies = "127.0.0.1" }) { server in
            let channel = uniqueChannel()
            let quotes = String(repeating: "\"", count: 64_000)
            for _ in 1...200 { _ = try await ChatHTTP.send(port: server.port, data: quotes, channel: channel) }
            let before = Self.residentBytes()
            // Each would have been a 25 MB answer; now each is at most 1 MiB, sent as read.
            let readers = try (0..<6).map { _ in try RawConnection(port: server.port) }
            for reader in readers {
                reader.write("GET /history?channel=\(channel)&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
            }
            try await Task.sleep(for: .seconds(2))
            let answer = try await ChatHTTP.send(port: server.port, data: "from elsewhere", channel: channel, headers: [("X-Forwarded-For", "198.51.100.7")])
            #expect(answer.status == 200, "publishing goes on while history readers stall")
            let grown = Self.residentBytes() - before
            #expect(grown < 60 << 20, "resident memory grew by \(grown >> 20) MB")
            for reader in readers { reader.close() }
        }
    }

    @Test func controlCharactersAreRefusedInMessagesButTabsAndLineBreaksAreNot() async throws {
        try await withServer(broker: .memory) { server in
            for text in ["a\u{01}b", "\u{7F}", "x\u{85}", "\u{00}"] {
                let answer = try await ChatHTTP.send(port: server.port, data: text, channel: uniqueChannel())
                #expect(answer.status == 400)
                #expect(answer.body.hasPrefix("Invalid message: a message cannot hold control characters"))
            }
            #expect(try await ChatHTTP.send(port: server.port, data: "line\r\nbreak\tand tab", channel: uniqueChannel()).status == 200)
        }
    }

    @Test func oneAddressCannotHoldEveryConnectionAndIdleOnesMakeRoom() async throws {
        try await withServer(broker: .memory, {
            $0.maximumConnectionsPerAddress = 4
            $0.maximumConnections = 12
        }) { server in
            let held = try (0..<4).map { _ in try RawConnection(port: server.port) }
            for connection in held { connection.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") }
            try await Task.sleep(for: .milliseconds(300))
            let fifth = try RawConnection(port: server.port)
            fifth.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let refused = await fifth.readAll(timeout: .seconds(5))
            #expect(refused.hasPrefix("HTTP/1.1 429"))
            #expect(refused.contains("Too many connections from your address: at most 4 at once."))
            // Another address is served.
            let other = try RawConnection(port: server.port, from: "127.0.0.2")
            other.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(await other.readAll(timeout: .seconds(5)).hasPrefix("HTTP/1.1 200"))
            for connection in held + [fifth, other] { connection.close() }
            // Full of idle keep-alive connections from many addresses: a newcomer takes an idle one's place.
            let idle = try (0..<12).map { index in try RawConnection(port: server.port, from: "127.0.1.\(index + 1)") }
            for connection in idle { connection.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") }
            try await Task.sleep(for: .milliseconds(500))
            let newcomer = try RawConnection(port: server.port, from: "127.0.2.1")
            newcomer.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(await newcomer.readAll(timeout: .seconds(5)).hasPrefix("HTTP/1.1 200"), "an idle connection made room")
            for connection in idle + [newcomer] { connection.close() }
        }
    }

    @Test(arguments: [ChatConfiguration.BrokerKind.memory, .redis])
    func oneAddressMayCreateOnlySoManyChannelsAMinute(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, {
            $0.newChannelRate = RateLimit(rate: 3, burst: 3)
            $0.trustedProxies = "127.0.0.1"
        }) { server in
            let prefix = uniqueChannel("new")
            func post(_ channel: String, from address: String = "198.51.100.9") async throws -> HTTPResult {
                try await ChatHTTP.send(port: server.port, data: "hello", channel: channel, headers: [("X-Forwarded-For", address)])
            }
            for index in 1...3 { #expect(try await post("\(prefix)_\(index)").status == 200) }
            let refused = try await post("\(prefix)_4")
            #expect(refused.status == 429)
            #expect(refused.body.hasPrefix("Too many new channels from your address: at most 3 a minute."))
            #expect(refused.header("retry-after") != nil)
            #expect(try await post("\(prefix)_1").status == 200, "an existing channel takes any number of posts")
            #expect(try await post("\(prefix)_4", from: "198.51.100.10").status == 200, "another address has its own allowance")
            if broker == .redis {
                let redis = try await connectToRedis()
                defer { redis.close() }
                var keys: [String] = []
                for index in 1...5 {
                    let found = try await redis.send(RedisCommand("KEYS", .string("chatroom:{\(prefix)_\(index)}:*"))).array ?? []
                    keys += found.compactMap(\.string)
                }
                #expect(keys.count == 8, "meta and history of four channels, nothing of the refused one: \(keys)")
                for key in keys {
                    let ttl = try await redis.send(RedisCommand("PTTL", .string(key))).integer ?? -1
                    #expect(ttl > 0 && ttl <= Int64(30 * 24 * 3600 * 1000), "\(key) has a lifetime")
                }
            }
        }
    }

    @Test func aFloodOfRefusalsWritesALineAnIntervalNotALineEach() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, {
            $0.sendRate = RateLimit(rate: 0.05, burst: 1)
            $0.trustedProxies = "127.0.0.1"
        }) { server in
            let started = ContinuousClock.now
            for index in 0..<200 {
                _ = try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: "flood", headers: [("X-Forwarded-For", "198.51.100.3")])
            }
            // One line, and one more for each 10 s interval the flood lasted (a busy machine is slow).
            let intervals = Int((ContinuousClock.now - started) / .seconds(10))
            let lines = logs.lines(containing: "Refused a message")
            #expect(lines.count >= 1 && lines.count <= 1 + intervals, "\(lines.count) lines for 199 refusals in \(intervals + 1) interval(s)")
            // Another address's refusal is its own line.
            _ = try await ChatHTTP.send(port: server.port, data: "x", channel: "flood", headers: [("X-Forwarded-For", "198.51.100.4")])
            _ = try await ChatHTTP.send(port: server.port, data: "y", channel: "flood", headers: [("X-Forwarded-For", "198.51.100.4")])
            #expect(logs.lines(containing: "client=198.51.100.4").count == 1)
        }
        let refusals = Refusals(interval: .seconds(10))
        var logger = Logger(label: "t") { _ in logs }
        logger.logLevel = .info
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        for offset in 0..<50 { refusals.record("Unit refusal", route: "r", reason: "x", client: "a", logger: logger, now: start + .milliseconds(Int64(offset))) }
        refusals.record("Unit refusal", route: "r", reason: "x", client: "a", logger: logger, now: start + .seconds(11))
        let unit = logs.lines(containing: "Unit refusal")
        #expect(unit.count == 2)
        #expect(unit.last?.contains("repeats=49") == true, "the next line counts what was skipped")
    }

    @Test func everyFrameCountsAgainstTheSocketsRatePongsAndContinuationsToo() async throws {
        try await withServer(broker: .memory, { $0.socketMessageRate = RateLimit(rate: 1, burst: 5) }) { server in
            let pongs = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(uniqueChannel())")
            // The server hangs up once it has closed: later writes may fail, and that is fine.
            for _ in 0..<50 { guard (try? await pongs.sendFrame(opcode: 0xA, payload: [])) != nil else { break } }
            #expect(await closeCode(of: pongs) == 1008)
            let pieces = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(uniqueChannel())")
            try await pieces.sendFrame(opcode: 0x1, payload: Array("a".utf8), fin: false)
            for _ in 0..<50 { guard (try? await pieces.sendFrame(opcode: 0x0, payload: [], fin: false)) != nil else { break } }
            #expect(await closeCode(of: pieces) == 1008)
            try await Self.stillServes(server)
        }
    }

    @Test(arguments: [ChatConfiguration.BrokerKind.memory, .redis])
    func bytesSentWithTheUpgradeInOneWriteAreNoCrash(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.channelCaps = [ChannelName("support")!: 3] }) { server in
            let head = "GET /wb/?channel=CHANNEL HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n"
            for (channel, extra) in [(uniqueChannel(), "\r\n\r\n"), (uniqueChannel(), "\r\n\u{81}\u{80}\0\0\0\0"), ("support", "Sec-WebSocket-Protocol: chat.v1\r\n\r\n\r\n")] {
                let connection = try RawConnection(port: server.port)
                connection.write(head.replacingOccurrences(of: "CHANNEL", with: channel) + extra)
                let answer = await connection.readAll(timeout: .seconds(10), headOnly: true)
                #expect(answer.hasPrefix("HTTP/1.1 101"), "\(answer.prefix(40))")
                connection.close()
            }
            try await Self.stillServes(server)
        }
    }

    @Test func resumesTakeFromTheAddresssHistoryReads() async throws {
        try await withServer(broker: .memory, { $0.historyRate = RateLimit(rate: 0.05, burst: 2) }) { server in
            let channel = uniqueChannel()
            let first = try await ChatHTTP.send(port: server.port, data: "one", channel: channel)
            let epoch = try #require(first.header("chat-epoch"))
            var codes: [UInt16?] = []
            for _ in 0..<3 {
                let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=0&epoch=\(epoch)", subprotocols: ["chat.v1"])
                codes.append(await closeCode(of: socket, within: .seconds(2)))
                await socket.disconnect()
            }
            #expect(codes.last == 4429, "the third resume within the burst of two: \(codes)")
        }
    }

    @Test func aRefusedChatV1FrameTypeIsQuotedShortInBytes() {
        for type in [String(repeating: "👩‍👩‍👧‍👦", count: 32), "e" + String(repeating: "\u{0301}", count: 1000)] {
            guard case .invalid(let reason) = ChatV1Request(#"{"type":"\#(type)"}"#) else {
                Issue.record("an unknown type is refused")
                continue
            }
            #expect(reason.utf8.count < 200, "\(reason.utf8.count) bytes")
        }
    }

    @Test func aNameIsBoundedInBytesAsWellAsCharacters() async throws {
        let zalgo = "Z" + String(repeating: "\u{0301}", count: 30_000)
        #expect(zalgo.count == 1)
        #expect(SenderName.problem(with: zalgo)?.contains("at most 128 bytes") == true)
        #expect(SenderName.problem(with: "Z" + String(repeating: "\u{0301}", count: 63)) == nil, "127 bytes, one character")
        #expect(SenderName.problem(with: "Z" + String(repeating: "\u{0301}", count: 64)) == "a name has at most 128 bytes, got 129")
        #expect(SenderName.problem(with: "Ada Lovelace") == nil)
        try await withServer(broker: .memory) { server in
            let answer = try await ChatHTTP.send(port: server.port, data: "hi", channel: uniqueChannel(), name: zalgo)
            #expect(answer.status == 400)
            #expect(answer.body.contains("a name has at most 128 bytes"))
        }
    }

    @Test func aCappedRoomNeedsAnIdentityToTakeAPlace() async throws {
        try await withServer(broker: .memory, { $0.channelCaps = [ChannelName("support")!: 3] }) { server in
            for _ in 0..<3 {
                let anonymous = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=support", subprotocols: ["chat.v1"])
                #expect(await closeCode(of: anonymous) == 4401)
            }
            await #expect(throws: ChatWebSocket.Refused.self) {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=support")
            }
            let person = Person()
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=support", headers: [person.header], subprotocols: ["chat.v1"])
            // A capped room takes posts only from its people.
            let stranger = try await ChatHTTP.send(port: server.port, data: "hello?", channel: "support")
            #expect(stranger.status == 403)
            #expect(stranger.body.contains("takes messages only from them"))
            #expect(try await ChatHTTP.send(port: server.port, data: "welcome", channel: "support", headers: [person.header]).status == 200)
            #expect(try #require(await socket.nextText()).contains(#""data":"welcome""#), "a person with an identity is admitted")
            await socket.disconnect()
        }
    }

    // MARK: Wrong answers and leaks

    @Test func aPublishRedisTookButDidNotConfirmIs504AndItsRetryPublishesOnce() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                let channel = uniqueChannel()
                let listener = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
                redis.pause(true)
                let stalled = try await ChatHTTP.send(port: server.port, data: "once", channel: channel, headers: [("Idempotency-Key", "stall-1")])
                redis.pause(false)
                #expect(stalled.status == 504)
                #expect(stalled.body.hasPrefix("The message may have been published:"))
                #expect(stalled.body.contains("Retry with the same Idempotency-Key"))
                #expect(await listener.nextText(timeout: .seconds(10)) == "once", "Redis had it: it is delivered")
                // Redis may need a moment to be answered again.
                var retry = try await ChatHTTP.send(port: server.port, data: "once", channel: channel, headers: [("Idempotency-Key", "stall-1")])
                for _ in 0..<50 where retry.status != 200 {
                    try await Task.sleep(for: .milliseconds(100))
                    retry = try await ChatHTTP.send(port: server.port, data: "once", channel: channel, headers: [("Idempotency-Key", "stall-1")])
                }
                #expect(retry.status == 200)
                #expect(retry.header("chat-offset") == "1", "the first publish's offset")
                #expect(await listener.nextText(timeout: .seconds(1)) == nil, "the retry delivers nothing new")
                await listener.disconnect()
            }
        }
    }

    @Test(arguments: [ChatConfiguration.BrokerKind.memory, .redis])
    func anIdempotencyKeyPublishesOncePerSender(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let listener = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            let ada = Person()
            let bob = Person()
            let first = try await ChatHTTP.send(port: server.port, data: "hello", channel: channel, headers: [ada.header, ("Idempotency-Key", "k-1")])
            let again = try await ChatHTTP.send(port: server.port, data: "hello", channel: channel, headers: [ada.header, ("Idempotency-Key", "k-1")])
            let other = try await ChatHTTP.send(port: server.port, data: "hello", channel: channel, headers: [bob.header, ("Idempotency-Key", "k-1")])
            #expect([first.status, again.status, other.status] == [Int](repeating: 200, count: 3))
            #expect(again.header("chat-offset") == first.header("chat-offset"))
            #expect(again.header("chat-epoch") == first.header("chat-epoch"))
            #expect(other.header("chat-offset") != first.header("chat-offset"), "another sender's key is its own")
            #expect(await listener.nextText() == "hello")
            #expect(await listener.nextText() == "hello")
            #expect(await listener.nextText(timeout: .milliseconds(500)) == nil, "two messages, not three")
            for key in ["", String(repeating: "k", count: 65), "a b", "ключ"] {
                let bad = try await ChatHTTP.send(port: server.port, data: "x", channel: channel, headers: [("Idempotency-Key", key)])
                #expect(bad.status == 400, "key '\(key)'")
            }
            await listener.disconnect()
        }
    }

    @Test func twoInstancesRacingOnOneKeyPublishOnce() async throws {
        try await withServer(broker: .redis) { a in
            try await withServer(broker: .redis) { b in
                let person = Person()
                for round in 0..<20 {
                    let channel = uniqueChannel()
                    async let first = ChatHTTP.send(port: a.port, data: "r\(round)", channel: channel, headers: [person.header, ("Idempotency-Key", "race-\(round)")])
                    async let second = ChatHTTP.send(port: b.port, data: "r\(round)", channel: channel, headers: [person.header, ("Idempotency-Key", "race-\(round)")])
                    let (one, two) = try await (first, second)
                    #expect(one.status == 200 && two.status == 200)
                    #expect(one.header("chat-offset") == "1" && two.header("chat-offset") == "1")
                    let history = try await ChatHTTP.request("GET", port: a.port, path: "/history?channel=\(channel)")
                    #expect(history.body.contains(#""lastOffset":1,"#), "published once in round \(round)")
                }
            }
        }
    }

    @Test func theConnectSecretGuardsReadingAsItGuardsSockets() async throws {
        let secret = "a connect secret"
        try await withServer(broker: .memory, { $0.connectSecret = secret }) { server in
            let channel = uniqueChannel()
            let missing = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)")
            #expect(missing.status == 401)
            #expect(missing.header("www-authenticate") != nil)
            let expiry = Int64(Date().timeIntervalSince1970) + 600
            let other = ConnectToken(channel: "elsewhere", expiry: expiry).signed(with: secret)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&token=\(other)").status == 401)
            let token = ConnectToken(channel: channel, expiry: expiry).signed(with: secret)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&token=\(token)").status == 200)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)", headers: [("Authorization", "Bearer \(token)")]).status == 200)
        }
    }

    @Test func theStatusPageIsAnOperatorsAndNeverNamesPrivateRooms() async throws {
        try await withServer(broker: .memory) { server in
            let answer = try await ChatHTTP.request("GET", port: server.port, path: "/status")
            #expect(answer.status == 404)
            #expect(answer.body.contains("--metrics-port"))
        }
        try await withServer(broker: .memory, { $0.publishToken = "operator" }) { server in
            let ada = Person()
            let bob = Person()
            let room = "dm:" + [ada.id, bob.id].sorted().joined(separator: ":")
            let sockets = [
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(room)", headers: [ada.header]),
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=inbox:\(ada.id)", headers: [ada.header]),
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=lobby"),
            ]
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/status").status == 401)
            let page = try await ChatHTTP.request("GET", port: server.port, path: "/status", headers: [("Authorization", "Bearer operator")])
            #expect(page.status == 200)
            #expect(page.body.contains("<td>lobby</td>"))
            #expect(page.body.contains("(1 one-to-one room)"))
            #expect(page.body.contains("(1 inbox)"))
            #expect(!page.body.contains(ada.id) && !page.body.contains(bob.id), "nobody's identity")
            for socket in sockets { await socket.disconnect() }
        }
    }

    @Test func answersThatSetTheIdentityCookieAreNeverStored() async throws {
        try await withServer(broker: .memory) { server in
            let fresh = try await ChatHTTP.request("GET", port: server.port, path: "/")
            #expect(fresh.header("set-cookie")?.hasPrefix("uid=") == true)
            #expect(fresh.header("cache-control") == "private, no-store")
            #expect(fresh.header("vary") == "Cookie")
            let known = try await ChatHTTP.request("GET", port: server.port, path: "/", headers: [Person().header])
            #expect(known.header("set-cookie") == nil)
            #expect(known.header("cache-control") == "private, no-cache")
        }
    }

    @Test func aLateUpgradeIsNeverRedirectedOffTheSite() async throws {
        try await withServer(broker: .memory) { server in
            for (target, expected) in [("//evil.example/x", "404"), ("/\\evil.example", "404"), ("/wb/?channel=a", "307")] {
                let bytes = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET \(target) HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                let raw = String(buffer: try await ChatHTTP.exchange(host: "127.0.0.1", port: server.port, bytes: ByteBuffer(string: bytes), timeout: .seconds(10)))
                let second = raw.components(separatedBy: "HTTP/1.1 ").dropFirst(2).first ?? ""
                #expect(second.hasPrefix(expected), "\(target): \(second.prefix(60))")
                #expect(!raw.lowercased().contains("location: //") && !raw.contains("evil.example\r"), "\(target)")
                if expected == "307" { #expect(raw.contains("Location: /wb/?channel=a\r\n")) }
            }
        }
    }

    @Test func malformedRequestsAreAnsweredAtOnceAndHEADAndOPTIONSWork() async throws {
        try await withServer(broker: .memory, { $0.requestTimeout = .seconds(30) }) { server in
            let cases: [(String, String)] = [
                ("POST /send/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "400"),
                ("POST /send/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
                ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "400"),
                ("GET / HTTP/1.1\nHost: x\n\n", "400"),
                ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n", "400"),
                ("GET / HTTP/1.1\r\nHost: x\r\nX-A: " + String(repeating: "a", count: 90_000) + "\r\n\r\n", "431"),
                ("POST /send/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", "413"),
            ]
            for (request, status) in cases {
                // Well within the 30 s request deadline: the answer is not the deadline's 408.
                let raw = String(buffer: try await ChatHTTP.exchange(host: "127.0.0.1", port: server.port, bytes: ByteBuffer(string: request), timeout: .seconds(20)))
                #expect(raw.hasPrefix("HTTP/1.1 \(status)"), "\(request.prefix(60).debugDescription): \(raw.prefix(40))")
                #expect(raw.contains("Connection: close") || raw.lowercased().contains("connection: close"))
            }
            let head = try await ChatHTTP.request("HEAD", port: server.port, path: "/")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(try await ChatHTTP.request("HEAD", port: server.port, path: "/history?channel=a").status == 200)
            #expect(try await ChatHTTP.request("HEAD", port: server.port, path: "/healthz").status == 200)
            let options = try await ChatHTTP.request("OPTIONS", port: server.port, path: "/history")
            #expect(options.status == 204)
            #expect(options.header("access-control-allow-origin") == "*")
            try await Self.stillServes(server)
        }
    }

    @Test func aRequestNoRouteServesIsAnsweredWithWhatTheServerServesThere() async throws {
        try await withServer(broker: .memory) { server in
            let get = try await ChatHTTP.request("GET", port: server.port, path: "/send/")
            #expect(get.status == 405 && get.header("allow") == "POST, OPTIONS")
            #expect(get.body == "GET is not served at /send/: it answers POST, OPTIONS.\n")
            let put = try await ChatHTTP.request("PUT", port: server.port, path: "/history")
            #expect(put.status == 405 && put.header("allow") == "GET, HEAD, OPTIONS")
            #expect(try await ChatHTTP.request("POST", port: server.port, path: "/healthz").header("allow") == "GET, HEAD")
            #expect(try await ChatHTTP.request("PUT", port: server.port, path: "//api//mute").header("allow") == "POST", "empty segments do not count")
            let plain = try await ChatHTTP.request("GET", port: server.port, path: "/wb/")
            #expect(plain.status == 426 && plain.header("upgrade") == "websocket")
            #expect(plain.body.contains("WebSocket"))
            let nowhere = try await ChatHTTP.request("GET", port: server.port, path: "/nowhere")
            #expect(nowhere.status == 404 && nowhere.body == "There is nothing at /nowhere on this server.\n")
            // What a route itself answers 404 keeps its own words.
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(uniqueChannel())")
            #expect(history.status == 200)
            let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
            #expect(metrics[#"chatroom_refusals_total{route="unmatched",reason="method_not_allowed"}"#] == 4)
            #expect(metrics[#"chatroom_refusals_total{route="unmatched",reason="not_websocket"}"#] == 1)
            #expect(metrics[#"chatroom_refusals_total{route="unmatched",reason="not_found"}"#] == 1)
        }
    }

    @Test func aHandshakeWithABadKeyOrVersionIsAnswered() async throws {
        try await withServer(broker: .memory) { server in
            func upgrade(key: String?, version: String) async throws -> HTTPResult {
                var headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", version)]
                if let key { headers.append(("Sec-WebSocket-Key", key)) }
                return try await ChatHTTP.request("GET", port: server.port, path: "/wb/?channel=a", headers: headers)
            }
            for key in ["not base64", "", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR==", "AAAAAAAAAAAAAAAAAAAAAAAA"] {
                let answer = try await upgrade(key: key, version: "13")
                #expect(answer.status == 400, "key '\(key)'")
                #expect(answer.body.hasPrefix("Sec-WebSocket-Key must be one base64 value of 16 random bytes"))
            }
            #expect(try await upgrade(key: nil, version: "13").status == 400)
            let old = try await upgrade(key: "dGhlIHNhbXBsZSBub25jZQ==", version: "8")
            #expect(old.status == 426)
            #expect(old.header("sec-websocket-version") == "13")
            #expect(WebSocketKey.isValid("dGhlIHNhbXBsZSBub25jZQ=="))
        }
    }

    @Test func invalidUTF8IsRefusedRawOrEscaped() async throws {
        try await withServer(broker: .memory) { server in
            let escaped = try await ChatHTTP.request("POST", port: server.port, path: "/send/", body: "data=%FF")
            #expect(escaped.status == 400)
            #expect(escaped.body == "The form is not valid UTF-8 text.\n")
            var raw = ByteBuffer(string: "POST /send/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6\r\n\r\ndata=")
            raw.writeInteger(UInt8(0xFF))
            let answer = String(buffer: try await ChatHTTP.exchange(host: "127.0.0.1", port: server.port, bytes: raw, timeout: .seconds(10)))
            #expect(answer.hasPrefix("HTTP/1.1 400"))
            #expect(answer.hasSuffix("The form is not valid UTF-8 text.\n"))
            var part = ByteBuffer(string: "--b\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n")
            part.writeInteger(UInt8(0xFF))
            part.writeString("\r\n--b--\r\n")
            var multipart = ByteBuffer(
                string: "POST /send/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: \(part.readableBytes)\r\n\r\n"
            )
            multipart.writeBuffer(&part)
            let parts = String(buffer: try await ChatHTTP.exchange(host: "127.0.0.1", port: server.port, bytes: multipart, timeout: .seconds(10)))
            #expect(parts.hasSuffix("The form is not valid UTF-8 text.\n"), "\(parts.suffix(60))")
        }
    }

    @Test func textLogLinesQuoteWhatAClientControls() {
        let lines = CollectedLines()
        var handler = LogLineHandler(label: "chatroom", format: .text) { lines.append($0) }
        handler.logLevel = .info
        let logger = Logger(label: "chatroom") { _ in handler }
        logger.info("Refused", metadata: ["origin": "https://x status=200 client=10.9.9.9", "name": "a\nforged line", "plain": "198.51.100.1"])
        let line = lines.all.joined()
        #expect(line.contains(#"origin="https://x status=200 client=10.9.9.9""#))
        #expect(line.contains(#"name="a\nforged line""#))
        #expect(line.contains("plain=198.51.100.1"))
        #expect(line.filter { $0 == "\n" }.count == 1, "one line")
        #expect(LogLineHandler.field("") == #""""#)
        #expect(LogLineHandler.field("x\u{2028}forged\u{202E}") == #""x\u2028forged\u202e""#, "no line separator or bidi override")
        #expect(LogLineHandler.field(#"a"b\c"#) == #""a\"b\\c""#)
    }

    // MARK: Helpers

    static func threadCPUTime() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func residentBytes() -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
            let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// Collected log lines.
final class CollectedLines: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    func append(_ line: String) { lines.withLockedValue { $0.append(line) } }
    var all: [String] { lines.withLockedValue { $0 } }
}

/// A plain TCP connection of the test's own, from any loopback address: one that writes
/// and never reads, like a hostile client, or reads with a deadline.
final class RawConnection: Sendable {
    private let descriptor: Int32

    struct Failed: Error { var what: String }

    init(port: Int, from source: String = "127.0.0.1") throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failed(what: "socket") }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw Failed(what: "bind \(source)") }
        let connected = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw Failed(what: "connect") }
    }

    func write(_ text: String) {
        _ = text.withCString { send(descriptor, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }

    /// What arrives until the server closes or `timeout` passes; the blocking read runs
    /// on a thread of its own, never on the tests' cooperative pool (two threads here).
    /// - Parameter headOnly: stop at the end of the answer's head (a socket stays open).
    func readAll(timeout: Duration, headOnly: Bool = false) async -> String {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: self.blockingReadAll(timeout: timeout, headOnly: headOnly)) }
        }
    }

    private func blockingReadAll(timeout: Duration, headOnly: Bool) -> String {
        var deadline = timeval(tv_sec: Int(timeout / .seconds(1)), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &deadline, socklen_t(MemoryLayout<timeval>.size))
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            bytes += buffer[..<count]
            if headOnly, String(decoding: bytes, as: UTF8.self).contains("\r\n\r\n") { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func close() {
        Glibc.close(descriptor)
    }
}
