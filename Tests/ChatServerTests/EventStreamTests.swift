import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import NIOCore
import Testing

/// An event's `data` as a JSON object.
private func object(_ event: ChatEventStream.Event?) -> [String: Any] {
    guard let event else { return [:] }
    return ((try? JSONSerialization.jsonObject(with: Data(event.data.utf8))) as? [String: Any]) ?? [:]
}

/// `/events?channel=…` for `channels`, plus `extra` query fields.
private func eventsPath(_ channels: [String], _ extra: String = "") -> String {
    "/events?" + channels.map { "channel=\($0)" }.joined(separator: "&") + (extra.isEmpty ? "" : "&" + extra)
}

/// Reads `count` messages (events named `message`), returning (channel, data) and the
/// last event id after them; `nil` if they do not all come.
private func messages(_ count: Int, from stream: ChatEventStream) async -> (messages: [(channel: String, data: String, offset: Int64)], lastEventID: String)? {
    var got: [(String, String, Int64)] = []
    var lastID = ""
    while got.count < count {
        guard let event = await stream.next(named: ["message"]) else { return nil }
        let json = object(event)
        got.append((json.channel ?? "", json.data ?? "", json.int("offset") ?? -1))
        lastID = event.lastEventID
    }
    return (got, lastID)
}

@Suite("Server-Sent Events: GET /events with the offsets of chat.v2")
struct EventStreamTests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    @Test func anEventsBytesCarryTheChannelsPositionAndGiveItUpForAStreamsOwn() throws {
        let channel = ChannelName("dm:a:b")!
        let message = Message(channel: channel, offset: 7, epoch: "e1", time: 5, data: ByteBuffer(string: "two\nlines"))
        let event = ChatEvent.message(message)
        let frame = try #require(EventStreamFrames.frame(of: event, chatV1: ChatV1.message(message)))
        let text = String(buffer: frame)
        #expect(text.hasPrefix("event: message\ndata: {\"type\":\"message\",\"channel\":\"dm:a:b\",\"offset\":7,"))
        #expect(text.hasSuffix("\"data\":\"two\\nlines\"}\nid: dm:a:b=e1:7\n\n"), "one data line, then the channel's own id")
        #expect(String(buffer: EventStreamFrames.message(message)) == text, "a replayed message is the same bytes")
        var joined = EventStreamFrames.withoutID(frame)
        let position = EventStreamPosition(entries: [
            .init(channel: channel, epoch: "e1", offset: 7), .init(channel: ChannelName("general")!, epoch: "", offset: 0),
        ])
        var id = EventStreamFrames.idLine(position)
        joined.writeBuffer(&id)
        #expect(String(buffer: joined).hasSuffix("lines\"}\nid: dm:a:b=e1:7,general=:0\n\n"))
        let presence = try #require(EventStreamFrames.frame(of: .presence(channel: channel, online: 3), chatV1: ChatV1.presence(channel: channel, online: 3)))
        #expect(String(buffer: presence) == "event: presence\ndata: {\"type\":\"presence\",\"channel\":\"dm:a:b\",\"online\":3}\n\n", "no id: it does not move the position")
        #expect(String(buffer: EventStreamFrames.withoutID(presence)) == "event: presence\ndata: {\"type\":\"presence\",\"channel\":\"dm:a:b\",\"online\":3}\n")
        let reset = try #require(EventStreamFrames.frame(of: .reset(channel: channel, epoch: "e2"), chatV1: ChatV1.reset(channel: channel, epoch: "e2")))
        #expect(String(buffer: reset).hasSuffix("\nid: dm:a:b=e2:0\n\n"))
    }

    @Test(arguments: brokers)
    func aStreamDeliversItsChannelsWithItsPositionAsEachID(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (a, b) = (uniqueChannel("a"), uniqueChannel("b"))
            _ = try await ChatHTTP.send(port: server.port, data: "before", channel: a)
            let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([a, b]), headers: [Person().header])
            #expect(stream.status == 200)
            #expect(stream.head.header("Content-Type") == "text/event-stream")
            #expect(stream.head.header("Cache-Control") == "no-cache")
            #expect(stream.head.header("X-Accel-Buffering") == "no")
            // Each channel's `subscribed` as its start is known, in any order.
            var subscribed: [String: [String: Any]] = [:]
            var lastID = ""
            for _ in 0..<2 {
                let event = await stream.next(named: ["subscribed"])
                subscribed[object(event).channel ?? ""] = object(event)
                lastID = event?.lastEventID ?? ""
            }
            #expect(subscribed[a]?.int("offset") == 1 && subscribed[b]?.int("offset") == 0)
            let epochA = subscribed[a]?["epoch"] as? String ?? ""
            #expect(lastID == "\(a)=\(epochA):1,\(b)=:0", "subscribed says where the stream starts, in the request's order")

            _ = try await ChatHTTP.send(port: server.port, data: "one \"quoted\"\nline", channel: a)
            _ = try await ChatHTTP.send(port: server.port, data: "two", channel: b)
            let one = await stream.next(named: ["message"])
            #expect(object(one).data == "one \"quoted\"\nline" && object(one).int("offset") == 2, "the JSON on one data line")
            #expect(one?.lastEventID == "\(a)=\(epochA):2,\(b)=:0")
            let two = await stream.next(named: ["message"])
            let epochB = object(two)["epoch"] as? String ?? ""
            #expect(object(two).data == "two" && two?.lastEventID == "\(a)=\(epochA):2,\(b)=\(epochB):1")
            #expect(try EventStreamPosition(parsing: two?.lastEventID ?? "").entries.count == 2)
            stream.close()
        }
    }

    @Test(arguments: brokers)
    func aStreamOfOneChannelCarriesItsWholePositionInTheSharedBytes(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let streams = [
                try await ChatEventStream.connect(port: server.port, path: eventsPath([channel])),
                try await ChatEventStream.connect(port: server.port, path: eventsPath([channel])),
            ]
            for stream in streams { _ = await stream.next(named: ["subscribed"]) }
            for number in 1...5 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel) }
            for stream in streams {
                let read = await messages(5, from: stream)
                #expect(read?.messages.map(\.data) == ["m1", "m2", "m3", "m4", "m5"])
                #expect(read?.lastEventID.hasPrefix("\(channel)=") == true && read?.lastEventID.hasSuffix(":5") == true)
                stream.close()
            }
        }
    }

    @Test(arguments: brokers)
    func lastEventIDResumesEveryChannelWithNoHoleAndNoDuplicate(broker: ChatConfiguration.BrokerKind) async throws {
        let servers = broker == .redis ? [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)] : [try await TestServer.start(broker: .memory)]
        defer { Task { for server in servers { await server.stop() } } }
        let (a, b, c) = (uniqueChannel("a"), uniqueChannel("b"), uniqueChannel("c"))
        let person = Person()
        let stream = try await ChatEventStream.connect(port: servers[0].port, path: eventsPath([a, b, c]), headers: [person.header])
        for _ in 0..<3 { _ = await stream.next(named: ["subscribed"]) }
        let sender = servers.last!
        for number in 1...3 {
            for channel in [a, b] { _ = try await ChatHTTP.send(port: sender.port, data: "\(channel) \(number)", channel: channel) }
        }
        guard let first = await messages(6, from: stream) else {
            Issue.record("the first messages did not come")
            return
        }
        stream.close()
        // Away: more in a and c (c had nothing when the stream joined it).
        for number in 4...6 { _ = try await ChatHTTP.send(port: sender.port, data: "\(a) \(number)", channel: a) }
        _ = try await ChatHTTP.send(port: sender.port, data: "\(c) 1", channel: c)
        // Back on the other instance, as a browser reconnects: the same URL, the header.
        let back = try await ChatEventStream.connect(
            port: sender.port, path: eventsPath([a, b, c]), headers: [person.header, ("Last-Event-ID", first.lastEventID)]
        )
        #expect(back.status == 200)
        // Meanwhile more: the seam between the replay and live.
        let publishing = Task {
            for number in 4...8 { _ = try await ChatHTTP.send(port: servers[0].port, data: "\(b) \(number)", channel: b) }
        }
        guard let resumed = await messages(3 + 1 + 5, from: back) else {
            Issue.record("the resume did not bring everything")
            return
        }
        try await publishing.value
        #expect(resumed.messages.filter { $0.channel == a }.map(\.data) == ["\(a) 4", "\(a) 5", "\(a) 6"])
        #expect(resumed.messages.filter { $0.channel == b }.map(\.data) == (4...8).map { "\(b) \($0)" })
        #expect(resumed.messages.filter { $0.channel == c }.map(\.data) == ["\(c) 1"])
        #expect(await back.next(named: ["message"], timeout: .milliseconds(300)) == nil, "no duplicate")
        back.close()

        // The query field does the same, for clients that cannot set headers.
        let again = try await ChatEventStream.connect(
            port: servers[0].port, path: eventsPath([a], "lastEventId=" + ChatHTTP.formEncode(first.lastEventID)), headers: [person.header]
        )
        let replayed = await messages(3, from: again)
        #expect(replayed?.messages.map(\.data) == ["\(a) 4", "\(a) 5", "\(a) 6"])
        again.close()
    }

    @Test func aPositionFromAnotherHistoryIsAnsweredWithReset() async throws {
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel()
            _ = try await ChatHTTP.send(port: server.port, data: "one", channel: channel)
            let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]), headers: [("Last-Event-ID", "\(channel)=0ther:7")])
            let reset = await stream.next(named: ["reset", "message"])
            #expect(reset?.name == "reset" && reset?.lastEventID.hasSuffix(":0") == true)
            _ = try await ChatHTTP.send(port: server.port, data: "two", channel: channel)
            let live = await stream.next(named: ["message"])
            #expect(object(live).data == "two")
            stream.close()
        }
    }

    @Test func everyRefusalComesBeforeTheStreamWithItsStatusAndWords() async throws {
        let secret = "connect-secret"
        try await withServer(broker: .memory, {
            $0.allowedOrigins = ["http://chat.example"]
            $0.connectSecret = secret
            $0.channelCaps = [ChannelName("capped")!: 1]
            $0.maximumSubscriptions = 3
        }) { server in
            let channel = "general"
            let token = ConnectToken(channel: nil, expiry: Int64(Date().timeIntervalSince1970) + 600).signed(with: secret)
            func refusal(_ path: String, _ headers: [(String, String)] = []) async throws -> (Int, String) {
                let stream = try await ChatEventStream.connect(port: server.port, path: path, headers: headers)
                return (stream.status, stream.head.body)
            }
            let withToken = "token=\(token)"
            #expect(try await refusal("/events?\(withToken)") == (400, "Name at least one channel: /events?channel=NAME (the field may repeat).\n"))
            #expect(try await refusal(eventsPath(["bad!name"], withToken)).1.hasPrefix("Invalid channel name:"))
            #expect(try await refusal(eventsPath(["a", "b", "c", "d"], withToken)).0 == 400)
            #expect(try await refusal(eventsPath([channel], withToken), [("Last-Event-ID", "nonsense")]).1.hasPrefix("Invalid Last-Event-ID: "))
            let unsigned = try await refusal(eventsPath([channel]))
            #expect(unsigned.0 == 401)
            let origin = try await refusal(eventsPath([channel], withToken), [("Origin", "http://evil.example")])
            #expect(origin == (403, "Origin http://evil.example may not open streams on this server.\n"))
            let dm = "dm:AAAAAAAAAAAAAAA:zzzzzzzzzzzzzzz"
            let privateRoom = try await refusal(eventsPath([channel, dm], withToken), [Person().header])
            #expect(privateRoom == (403, "This is a private one-to-one room: only its two people may use it.\n"), "one refused channel refuses the request")
            let first = Person()
            let inside = try await ChatEventStream.connect(port: server.port, path: eventsPath(["capped"], withToken), headers: [first.header])
            #expect(inside.status == 200)
            let full = try await refusal(eventsPath(["capped"], withToken), [Person().header])
            #expect(full == (403, "This room is full: it holds at most 1 person.\n"))
            inside.close()
            // What was taken for the channels of refused requests was given back.
            let fine = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel], withToken))
            #expect(fine.status == 200)
            fine.close()
            // HEAD: the decision alone, nothing streamed (what a page asks to find a refused room).
            let head = try await ChatHTTP.request("HEAD", port: server.port, path: eventsPath([channel], withToken))
            #expect(head.status == 200 && head.header("Content-Type") == "text/event-stream")
            let refusedHead = try await ChatHTTP.request("HEAD", port: server.port, path: eventsPath([dm], withToken), headers: [Person().header])
            #expect(refusedHead.status == 403)
        }
    }

    @Test func theAddressSocketLimitAndTheHistoryAllowanceCountStreams() async throws {
        try await withServer(broker: .memory, {
            $0.maximumSocketsPerAddress = 1
            $0.historyRate = RateLimit(rate: 0.01, burst: 1)
        }) { server in
            let channel = uniqueChannel()
            let one = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]))
            #expect(one.status == 200)
            let two = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]))
            #expect(two.status == 503 && two.head.header("Retry-After") != nil, "\(two.head.body)")
            one.close()
            try await Task.sleep(for: .milliseconds(200))
            _ = try await ChatHTTP.send(port: server.port, data: "x", channel: channel)
            let position = "\(channel)=:0"
            let resumed = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]), headers: [("Last-Event-ID", position)])
            #expect(resumed.status == 200)
            resumed.close()
            try await Task.sleep(for: .milliseconds(200))
            let again = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]), headers: [("Last-Event-ID", position)])
            #expect(again.status == 429 && again.head.body.hasPrefix("Too many history reads from your address"))
        }
    }

    @Test func aBrokerThatCannotBeReachedIs503() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                await redis.stop()
                for _ in 0..<50 {
                    if try await ChatHTTP.request("GET", port: server.port, path: "/readyz").status != 200 { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([uniqueChannel()]))
                #expect(stream.status == 503 && stream.head.body.hasPrefix("The chat is temporarily unavailable"), "\(stream.head.body)")
            }
        }
    }

    @Test func anIdleStreamIsPinged() async throws {
        try await withServer(broker: .memory, { $0.eventStreamPing = .milliseconds(200) }) { server in
            let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([uniqueChannel()]))
            let ping = await stream.next(named: [":"], timeout: .seconds(3))
            #expect(ping?.data == "ping")
            stream.close()
        }
    }

    @Test(arguments: brokers)
    func aSlowReaderIsClosedWithAFinalGapAndResumesWithoutAHole(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, {
            $0.socketQueueLimit = 16 * 1024
            // Every post must go through: the address's rate would refuse most of them.
            $0.sendRate = nil
        }) { server in
            let channel = uniqueChannel()
            let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]), receiveBuffer: 4096)
            _ = await stream.next(named: ["subscribed"])
            stream.pauseReading(true)
            // More than the kernel's buffers on both sides hold, in few posts: the stream
            // waits 10 s for its final gap to be read, and the posts must be done by then.
            let text = String(repeating: "x", count: 60000)
            var sent = 0
            for number in 1...120 {
                #expect(try await ChatHTTP.send(port: server.port, data: "\(number) \(text)", channel: channel).status == 200)
                sent = number
                // Read again as soon as the server counts the stream too slow: it waits only
                // so long for its final gap to be read, however long the posts take.
                if number % 5 == 0, try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body.contains(#"reason="slow_reader""#) { break }
            }
            stream.pauseReading(false)
            var got: [Int64] = []
            var lastID = ""
            var gap: [String: Any]?
            // The stream ends after its gap; the wait between events is generous for a busy machine.
            while let event = await stream.next(timeout: .seconds(15)) {
                if event.name == "message" {
                    got.append(object(event).int("offset") ?? -1)
                    lastID = event.lastEventID
                }
                if event.name == "gap" { gap = object(event) }
            }
            #expect(gap != nil, "a final gap: got \(got.count) of \(sent), the last \(got.last ?? 0)")
            #expect(await stream.ended(within: .seconds(5)))
            if let from = gap?.int("from") { #expect(from == (got.last ?? 0) + 1, "the gap starts after the last message written") }
            // The client resumes from its last id: the rest, each once.
            let back = try await ChatEventStream.connect(port: server.port, path: eventsPath([channel]), headers: [("Last-Event-ID", lastID)])
            let rest = await messages(sent - got.count, from: back)
            #expect(rest.map { got + $0.messages.map(\.offset) } == Array(1...Int64(sent)))
            back.close()
        }
    }

    @Test(arguments: brokers)
    func typingReachesAStreamAndABanEndsItsChannelAndRefusesItsNextRequest(broker: ChatConfiguration.BrokerKind) async throws {
        let admin = "sse-admin-token-0123456789"
        try await withServer(broker: broker, { $0.adminToken = admin }) { server in
            let (room, other) = (uniqueChannel("room"), uniqueChannel("other"))
            let ada = Person()
            let stream = try await ChatEventStream.connect(port: server.port, path: eventsPath([room, other]), headers: [ada.header])
            for _ in 0..<2 { _ = await stream.next(named: ["subscribed"]) }
            let bob = try await V2Client.connect(server, person: Person())
            try await bob.subscribe(room)
            _ = await bob.subscribed(room)
            try await bob.send(["type": "typing", "channel": room])
            let typing = await stream.next(named: ["typing"])
            #expect(object(typing).channel == room && (object(typing)["member"] as? [String: Any])?["id"] != nil)

            let ban = try await ChatHTTP.request(
                "POST", port: server.port, path: "/api/ban", headers: [("Authorization", "Bearer \(admin)"), ("Content-Type", "application/x-www-form-urlencoded")],
                body: "channel=\(room)&user=\(ada.id)&seconds=0"
            )
            #expect(ban.status == 200, "\(ban.body)")
            let refused = await stream.next(named: ["refused"])
            #expect(object(refused).channel == room && object(refused).int("code") == 4403)
            _ = try await ChatHTTP.send(port: server.port, data: "still here", channel: other)
            #expect(object(await stream.next(named: ["message"])).data == "still here", "the stream goes on with its other channel")
            stream.close()
            let again = try await ChatEventStream.connect(port: server.port, path: eventsPath([room, other]), headers: [ada.header])
            #expect(again.status == 403 && again.head.body == "You are banned from this room.\n")
            await bob.disconnect()
        }
    }
}
