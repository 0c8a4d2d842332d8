import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import Testing

/// A chat.v2 client for tests: JSON frames out, frames in as dictionaries.
struct V2Client {
    let socket: ChatWebSocket

    static func connect(_ server: TestServer, query: String = "", person: Person? = nil, headers: [(String, String)] = []) async throws -> V2Client {
        let socket = try await ChatWebSocket.connect(
            port: server.port, path: "/wb/" + (query.isEmpty ? "" : "?" + query), headers: (person.map { [$0.header] } ?? []) + headers,
            subprotocols: ["chat.v2"]
        )
        #expect(socket.subprotocol == "chat.v2")
        return V2Client(socket: socket)
    }

    func send(_ frame: [String: Any]) async throws {
        let data = try JSONSerialization.data(withJSONObject: frame)
        try await socket.send(text: String(decoding: data, as: UTF8.self))
    }

    func subscribe(_ channel: String, since: Int64? = nil, epoch: String? = nil) async throws {
        var frame: [String: Any] = ["type": "subscribe", "channel": channel]
        if let since { frame["since"] = since }
        if let epoch { frame["epoch"] = epoch }
        try await send(frame)
    }

    func post(_ data: String, to channel: String, id: String = UUID().uuidString, name: String? = nil) async throws {
        var frame: [String: Any] = ["type": "send", "id": id, "channel": channel, "data": data]
        if let name { frame["name"] = name }
        try await send(frame)
    }

    /// The next frame, `nil` if none arrives within `timeout`.
    func next(timeout: Duration = .seconds(5)) async -> [String: Any]? {
        guard let text = await socket.nextText(timeout: timeout) else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
    }

    /// The next frame that is not about who is there (members, presence, join, leave).
    func nextEvent(timeout: Duration = .seconds(5)) async -> [String: Any]? {
        while let frame = await next(timeout: timeout) {
            if ["members", "presence", "join", "leave"].contains(frame["type"] as? String) { continue }
            return frame
        }
        return nil
    }

    /// Waits for `subscribed` of `channel`; returns its epoch (`nil` for an empty channel) and offset.
    func subscribed(_ channel: String) async -> (epoch: String?, offset: Int64)? {
        guard let frame = await nextEvent(), frame["type"] as? String == "subscribed", frame["channel"] as? String == channel else { return nil }
        return (frame["epoch"] as? String, (frame["offset"] as? NSNumber)?.int64Value ?? -1)
    }

    /// Whether the socket still answers: a ping gets its pong.
    func answers() async throws -> Bool {
        try await send(["type": "ping"])
        while let frame = await next() {
            if frame["type"] as? String == "pong" { return true }
        }
        return false
    }

    func disconnect() async { await socket.disconnect() }
}

extension Dictionary where Key == String, Value == Any {
    var type: String? { self["type"] as? String }
    var channel: String? { self["channel"] as? String }
    var data: String? { self["data"] as? String }
    func int(_ key: String) -> Int64? { (self[key] as? NSNumber)?.int64Value }
}

@Suite("chat.v2: one socket, many channels, acknowledged sends")
struct ChatV2Tests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    @Test(arguments: brokers)
    func subscriptionsDeliverTheirOwnChannelsUntilUnsubscribed(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (a, b) = (uniqueChannel("a"), uniqueChannel("b"))
            let client = try await V2Client.connect(server)
            try await client.subscribe(a)
            let first = await client.subscribed(a)
            #expect(first?.epoch == nil && first?.offset == 0, "an empty channel: no epoch, offset 0")
            try await client.subscribe(b)
            #expect(await client.subscribed(b) != nil)

            #expect(try await ChatHTTP.send(port: server.port, data: "to a", channel: a).status == 200)
            #expect(try await ChatHTTP.send(port: server.port, data: "to b", channel: b).status == 200)
            let one = await client.nextEvent()
            let two = await client.nextEvent()
            #expect(one?.type == "message" && one?.channel == a && one?.data == "to a" && one?.int("offset") == 1)
            #expect(two?.type == "message" && two?.channel == b && two?.data == "to b")

            try await client.send(["type": "unsubscribe", "channel": a])
            let left = await client.nextEvent()
            #expect(left?.type == "unsubscribed" && left?.channel == a)
            #expect(try await ChatHTTP.send(port: server.port, data: "a again", channel: a).status == 200)
            #expect(try await ChatHTTP.send(port: server.port, data: "b again", channel: b).status == 200)
            let next = await client.nextEvent()
            #expect(next?.channel == b && next?.data == "b again", "nothing of an unsubscribed channel")
            await client.disconnect()
        }
    }

    @Test(arguments: brokers)
    func subscribedTellsTheLastOffsetAndOnlyLaterMessagesFollow(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            for number in 1...3 { _ = try await ChatHTTP.send(port: server.port, data: "old \(number)", channel: channel) }
            // The channel in the URL subscribes at once.
            let client = try await V2Client.connect(server, query: "channel=\(channel)")
            let position = await client.subscribed(channel)
            #expect(position?.offset == 3 && position?.epoch != nil)
            _ = try await ChatHTTP.send(port: server.port, data: "new", channel: channel)
            let message = await client.nextEvent()
            #expect(message?.data == "new" && message?.int("offset") == 4 && message?["epoch"] as? String == position?.epoch)
            #expect(await client.nextEvent(timeout: .milliseconds(200)) == nil)
            await client.disconnect()
        }
    }

    @Test(arguments: brokers)
    func eachSubscriptionResumesAfterItsOwnOffset(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (a, b) = (uniqueChannel("a"), uniqueChannel("b"))
            for number in 1...5 {
                _ = try await ChatHTTP.send(port: server.port, data: "a\(number)", channel: a)
                _ = try await ChatHTTP.send(port: server.port, data: "b\(number)", channel: b)
            }
            let probe = try await V2Client.connect(server)
            try await probe.subscribe(a)
            let epochA = await probe.subscribed(a)?.epoch
            try await probe.subscribe(b)
            let epochB = await probe.subscribed(b)?.epoch
            await probe.disconnect()

            let client = try await V2Client.connect(server)
            try await client.subscribe(a, since: 2, epoch: epochA)
            try await client.subscribe(b, since: 4, epoch: epochB)
            var seen: [String: [String]] = [:]
            var announced: Set<String> = []
            while seen[a, default: []].count < 3 || seen[b, default: []].count < 1, let frame = await client.nextEvent() {
                guard let channel = frame.channel else { continue }
                if frame.type == "subscribed" {
                    #expect(frame.int("offset") == 5)
                    announced.insert(channel)
                } else if frame.type == "message" {
                    #expect(announced.contains(channel), "subscribed comes before the replay")
                    seen[channel, default: []].append(frame.data ?? "")
                }
            }
            #expect(seen[a] == ["a3", "a4", "a5"])
            #expect(seen[b] == ["b5"])
            _ = try await ChatHTTP.send(port: server.port, data: "a6", channel: a)
            let live = await client.nextEvent()
            #expect(live?.data == "a6", "live after the replay, nothing twice")
            await client.disconnect()
        }
    }

    @Test(arguments: brokers)
    func resumeWhilePublishingHasNoHoleAndNoDuplicateAtTheSeam(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("seam")
            for number in 1...10 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel) }
            let probe = try await V2Client.connect(server, query: "channel=\(channel)")
            let epoch = await probe.subscribed(channel)?.epoch
            await probe.disconnect()
            // Messages keep coming while the subscriptions resume.
            let publisher = Task {
                for number in 11...60 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel) }
            }
            var clients: [V2Client] = []
            for since in [0, 3, 7, 10] as [Int64] {
                let client = try await V2Client.connect(server)
                try await client.subscribe(channel, since: since, epoch: epoch)
                clients.append(client)
            }
            try await publisher.value
            for (client, since) in zip(clients, [0, 3, 7, 10] as [Int64]) {
                var offsets: [Int64] = []
                while offsets.last ?? since < 60, let frame = await client.nextEvent() {
                    if frame.type == "message", let offset = frame.int("offset") { offsets.append(offset) }
                }
                #expect(offsets == Array((since + 1)...60), "after \(since): every offset once, in order")
                await client.disconnect()
            }
        }
    }

    @Test(arguments: brokers)
    func manySocketsResumingAtOnceShareTheirHistoryReadsAndMissNothing(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.maximumSocketsPerAddress = 1_000 }) { server in
            let channel = uniqueChannel("storm")
            for number in 1...5 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel) }
            let probe = try await V2Client.connect(server, query: "channel=\(channel)")
            let epoch = await probe.subscribed(channel)?.epoch ?? ""
            // Every socket connects first, then all resume from offset 2 together, while
            // messages keep coming.
            var clients: [V2Client] = []
            for _ in 0..<60 { clients.append(try await V2Client.connect(server)) }
            let publisher = Task {
                for number in 6...25 { _ = try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: channel) }
            }
            for client in clients { try await client.subscribe(channel, since: 2, epoch: epoch) }
            // chat.v1 sockets resume through the same reads.
            var v1: [ChatWebSocket] = []
            for _ in 0..<20 {
                v1.append(try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=2&epoch=\(epoch)", subprotocols: ["chat.v1"]))
            }
            try await publisher.value
            for client in clients {
                var offsets: [Int64] = []
                while offsets.last ?? 2 < 25, let frame = await client.nextEvent() {
                    if frame.type == "message", let offset = frame.int("offset") { offsets.append(offset) }
                }
                #expect(offsets == Array(3...25))
                await client.disconnect()
            }
            for socket in v1 {
                var offsets: [Int64] = []
                while offsets.last ?? 2 < 25, let text = await socket.nextText() {
                    guard text.contains(#""type":"message""#), let frame = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { continue }
                    offsets.append(frame.int("offset") ?? 0)
                }
                #expect(offsets == Array(3...25))
                await socket.disconnect()
            }
            let metrics = try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body
            let shared = metrics.split(separator: "\n").first { $0.hasPrefix("chatroom_history_reads_shared_total") }
                .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } } ?? 0
            #expect(shared > 0, "some of the 80 first reads were shared")
            await probe.disconnect()
        }
    }

    @Test func refusedSubscriptionsLeaveTheSocketOpen() async throws {
        let small = ChannelName("small_\(UInt32.random(in: 0...UInt32.max))")!
        try await withServer(broker: .memory, {
            $0.channelCaps = [small: 1]
            $0.maximumSubscriptions = 3
        }) { server in
            let (ada, bob) = (Person(), Person())
            let occupant = try await V2Client.connect(server, query: "channel=\(small)", person: bob)
            #expect(await occupant.subscribed(small.rawValue) != nil)

            let client = try await V2Client.connect(server, person: ada)
            func refusal(_ channel: String) async -> (code: Int64?, message: String?) {
                guard let frame = await client.nextEvent(), frame.type == "refused", frame.channel == channel else { return (nil, nil) }
                return (frame.int("code"), frame["message"] as? String)
            }
            try await client.subscribe("bad name!")
            #expect(await refusal("bad name!").code == 4400)
            let others = "dm:\(Person().id):\(Person().id)"
            try await client.subscribe(others)
            #expect(await refusal(others).code == 4403)
            try await client.subscribe(small.rawValue)
            let full = await refusal(small.rawValue)
            #expect(full.code == 4409 && full.message?.contains("full") == true)
            #expect(try await client.answers())

            // Without an identity, a capped room is refused with 4401.
            let anonymous = try await V2Client.connect(server)
            try await anonymous.subscribe(small.rawValue)
            let unknown = await anonymous.nextEvent()
            #expect(unknown?.type == "refused" && unknown?.int("code") == 4401)
            await anonymous.disconnect()

            // At most three subscriptions; the fourth is refused with 4429.
            let names = (0..<4).map { _ in uniqueChannel("many") }
            for name in names.prefix(3) {
                try await client.subscribe(name)
                #expect(await client.subscribed(name) != nil)
            }
            try await client.subscribe(names[3])
            #expect(await refusal(names[3]).code == 4429)
            // Subscribing twice is an error, and the subscription stays.
            try await client.subscribe(names[0])
            #expect(await client.nextEvent()?.type == "error")
            #expect(try await client.answers())
            _ = try await ChatHTTP.send(port: server.port, data: "still here", channel: names[0])
            #expect(await client.nextEvent()?.data == "still here")
            await client.disconnect()
            await occupant.disconnect()
        }
    }

    @Test func theServersChannelLimitCountsSubscriptionsAndGivesThemBack() async throws {
        try await withServer(broker: .memory, { $0.maximumChannels = 2 }) { server in
            let (a, b, c) = (uniqueChannel("a"), uniqueChannel("b"), uniqueChannel("c"))
            let client = try await V2Client.connect(server)
            try await client.subscribe(a)
            #expect(await client.subscribed(a) != nil)
            try await client.subscribe(b)
            #expect(await client.subscribed(b) != nil)
            try await client.subscribe(c)
            let refused = await client.nextEvent()
            #expect(refused?.type == "refused" && refused?.int("code") == 4503)
            try await client.send(["type": "unsubscribe", "channel": a])
            #expect(await client.nextEvent()?.type == "unsubscribed")
            try await client.subscribe(c)
            #expect(await client.subscribed(c) != nil, "the unsubscribed channel's place was given back")
            await client.disconnect()
            // A socket that closes gives back all of its places.
            for _ in 0..<50 {
                let other = try await V2Client.connect(server)
                try await other.subscribe(a)
                let answer = await other.nextEvent()
                await other.disconnect()
                if answer?.type == "subscribed" { return }
                try await Task.sleep(for: .milliseconds(100))
            }
            Issue.record("the closed socket's channels were never given back")
        }
    }

    @Test func aConnectTokenForOneChannelRefusesTheOthers() async throws {
        let secret = "connect-secret"
        try await withServer(broker: .memory, { $0.connectSecret = secret }) { server in
            let expiry = Int64(Date().timeIntervalSince1970) + 60
            let token = ConnectToken(channel: "room", expiry: expiry).signed(with: secret)
            await #expect(throws: ChatWebSocket.Refused.self) { _ = try await V2Client.connect(server) }
            let client = try await V2Client.connect(server, query: "token=\(token)")
            try await client.subscribe("room")
            #expect(await client.subscribed("room") != nil)
            try await client.subscribe("elsewhere")
            let refused = await client.nextEvent()
            #expect(refused?.type == "refused" && refused?.int("code") == 4401)
            await client.disconnect()
        }
    }

    @Test(arguments: brokers)
    func aSendIsAcknowledgedWithWhereItLandedAndDelivered(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let reader = try await V2Client.connect(server, query: "channel=\(channel)")
            #expect(await reader.subscribed(channel) != nil)
            let sender = try await V2Client.connect(server, person: Person())
            try await sender.post("hello", to: channel, id: "first-1", name: "Ada")
            let ack = await sender.nextEvent()
            #expect(ack?.type == "ack" && ack?["id"] as? String == "first-1" && ack?.channel == channel && ack?.int("offset") == 1)
            #expect(ack?["epoch"] as? String != nil)
            let message = await reader.nextEvent()
            #expect(message?.data == "hello" && message?["name"] as? String == "Ada" && message?.int("offset") == 1)
            await reader.disconnect()
            await sender.disconnect()
        }
    }

    @Test func everyRefusalOfSendHasItsNack() async throws {
        try await withServer(broker: .memory, { $0.maximumMessageSize = 100 }) { server in
            let client = try await V2Client.connect(server, person: Person())
            func nack(_ frame: [String: Any]) async throws -> (status: Int64?, message: String) {
                try await client.send(frame)
                guard let answer = await client.nextEvent(), answer.type == "nack" else { return (nil, "") }
                #expect(answer["id"] as? String == frame["id"] as? String)
                return (answer.int("status"), answer["message"] as? String ?? "")
            }
            let channel = uniqueChannel()
            func send(_ data: String, channel: String = channel, id: String = "x1", name: String? = nil) -> [String: Any] {
                var frame: [String: Any] = ["type": "send", "id": id, "channel": channel, "data": data]
                if let name { frame["name"] = name }
                return frame
            }
            #expect(try await nack(send("   ")).status == 400)
            #expect(try await nack(send("hi", channel: "no spaces")).message.contains("Invalid channel name"))
            #expect(try await nack(send("hi", name: String(repeating: "n", count: 40))).message.contains("Invalid name"))
            #expect(try await nack(send("bell \u{07}")).status == 400)
            #expect(try await nack(send("hi", id: "not ok!")).message.contains("Invalid id"))
            #expect(try await nack(send("hi", id: String(repeating: "i", count: 65))).status == 400)
            #expect(try await nack(send("hi", channel: "dm:\(Person().id):\(Person().id)")).status == 403)
            #expect(try await nack(send(String(repeating: "x", count: 101))).status == 413)
            #expect(try await client.answers())
            await client.disconnect()
        }
    }

    @Test func sendsOverTheAddressRateAreNackedWithRetryAfter() async throws {
        try await withServer(broker: .memory, { $0.sendRate = RateLimit(rate: 1, burst: 2) }) { server in
            let client = try await V2Client.connect(server, person: Person())
            let channel = uniqueChannel()
            for number in 0..<3 { try await client.post("m\(number)", to: channel, id: "r\(number)") }
            var statuses: [String: Int64] = [:]
            var retryAfter: Int64?
            for _ in 0..<3 {
                guard let frame = await client.nextEvent(), let id = frame["id"] as? String else { break }
                statuses[id] = frame.type == "ack" ? 200 : frame.int("status")
                if frame.type == "nack" { retryAfter = frame.int("retryAfter") }
            }
            #expect(statuses == ["r0": 200, "r1": 200, "r2": 429])
            #expect((retryAfter ?? 0) >= 1)
            await client.disconnect()
        }
    }

    @Test func newChannelsOverTheAddressAllowanceAreNacked() async throws {
        try await withServer(broker: .memory, { $0.newChannelRate = RateLimit(rate: 1, burst: 1) }) { server in
            let client = try await V2Client.connect(server, person: Person())
            try await client.post("one", to: uniqueChannel(), id: "n1")
            #expect(await client.nextEvent()?.type == "ack")
            try await client.post("two", to: uniqueChannel(), id: "n2")
            let refused = await client.nextEvent()
            #expect(refused?.type == "nack" && refused?.int("status") == 429 && refused?.int("retryAfter") != nil)
            await client.disconnect()
        }
    }

    @Test func sendsWhileRedisIsDownAreNacked503AndGoThroughOnceItIsBack() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                let channel = uniqueChannel()
                let client = try await V2Client.connect(server, person: Person())
                try await client.post("before", to: channel, id: "b1")
                #expect(await client.nextEvent()?.type == "ack")
                await redis.stop()
                for _ in 0..<50 {
                    if try await ChatHTTP.request("GET", port: server.port, path: "/readyz").status != 200 { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await client.post("during", to: channel, id: "d1")
                let refused = await client.nextEvent(timeout: .seconds(10))
                #expect(refused?.type == "nack" && refused?.int("status") == 503 && refused?.int("retryAfter") == 1)
                try await redis.start()
                var answer: [String: Any]?
                for _ in 0..<100 {
                    try await client.post("during", to: channel, id: "d1")
                    answer = await client.nextEvent(timeout: .seconds(10))
                    if answer?.type == "ack" { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                // The private Redis restarted empty: the channel starts a new epoch.
                #expect(answer?.type == "ack" && answer?.int("offset") == 1)
                await client.disconnect()
            }
        }
    }

    @Test func aSendRedisTookButDidNotAnswerIsNacked504AndItsRetryPublishesNothingNew() async throws {
        try await PrivateRedis.with { redis in
            try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
                let channel = uniqueChannel()
                let reader = try await V2Client.connect(server, query: "channel=\(channel)")
                #expect(await reader.subscribed(channel) != nil)
                let sender = try await V2Client.connect(server, person: Person())
                redis.pause(true)
                try await sender.post("once", to: channel, id: "stall-1")
                let stalled = await sender.nextEvent(timeout: .seconds(10))
                redis.pause(false)
                #expect(stalled?.type == "nack" && stalled?.int("status") == 504 && stalled?.int("retryAfter") == 1)
                #expect((stalled?["message"] as? String)?.contains("may have been published") == true)
                #expect(await reader.nextEvent(timeout: .seconds(10))?.data == "once", "Redis had it: it is delivered")
                var retry: [String: Any]?
                for _ in 0..<50 {
                    try await sender.post("once", to: channel, id: "stall-1")
                    retry = await sender.nextEvent(timeout: .seconds(10))
                    if retry?.type == "ack" { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(retry?.type == "ack" && retry?.int("offset") == 1, "the first publish's offset")
                #expect(await reader.nextEvent(timeout: .seconds(1)) == nil, "the retry delivers nothing new")
                await reader.disconnect()
                await sender.disconnect()
            }
        }
    }

    @Test func withAPublishTokenSocketsMayNotSend() async throws {
        try await withServer(broker: .memory, { $0.publishToken = "backend-only" }) { server in
            let client = try await V2Client.connect(server, person: Person())
            try await client.post("hello", to: uniqueChannel(), id: "p1")
            let refused = await client.nextEvent()
            #expect(refused?.type == "nack" && refused?.int("status") == 401)
            await client.disconnect()
        }
    }

    @Test(arguments: brokers)
    func theSameIDFromOnePersonIsPublishedOnceWhereverItComesFrom(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("once")
            let reader = try await V2Client.connect(server, query: "channel=\(channel)")
            #expect(await reader.subscribed(channel) != nil)
            let ada = Person()
            let first = try await V2Client.connect(server, person: ada)
            let second = try await V2Client.connect(server, person: ada)
            try await first.post("hello", to: channel, id: "same")
            let ack = await first.nextEvent()
            try await first.post("hello", to: channel, id: "same")
            let again = await first.nextEvent()
            try await second.post("hello", to: channel, id: "same")
            let elsewhere = await second.nextEvent()
            #expect(ack?.type == "ack" && again?.type == "ack" && elsewhere?.type == "ack")
            #expect(again?.int("offset") == ack?.int("offset") && elsewhere?.int("offset") == ack?.int("offset"))
            #expect(elsewhere?["epoch"] as? String == ack?["epoch"] as? String)
            // POST /send/ with the same Idempotency-Key, from the same person.
            let posted = try await ChatHTTP.send(port: server.port, data: "hello", channel: channel, headers: [ada.header, ("Idempotency-Key", "same")])
            #expect(posted.status == 200 && posted.header("Chat-Offset") == ack?.int("offset").map(String.init))
            // Someone else may use the same id.
            let bob = try await V2Client.connect(server, person: Person())
            try await bob.post("hello from bob", to: channel, id: "same")
            let bobs = await bob.nextEvent()
            #expect(bobs?.type == "ack" && bobs?.int("offset") == (ack?.int("offset") ?? 0) + 1)

            let delivered = [await reader.nextEvent(), await reader.nextEvent()].compactMap { $0?.data }
            #expect(delivered == ["hello", "hello from bob"])
            #expect(await reader.nextEvent(timeout: .milliseconds(300)) == nil, "the repeats delivered nothing")
            for client in [reader, first, second, bob] { await client.disconnect() }
        }
    }

    @Test func twoInstancesDeliverEachSubscriptionAndResumeWhereverTheSocketComesBack() async throws {
        let servers = [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)]
        do {
            let (a, b) = (uniqueChannel("a"), uniqueChannel("b"))
            let reader = try await V2Client.connect(servers[0])
            var positions: [String: String] = [:]
            for channel in [a, b] {
                try await reader.subscribe(channel)
                _ = await reader.subscribed(channel)
            }
            // Sent on the other instance, over a socket.
            let sender = try await V2Client.connect(servers[1], person: Person())
            for number in 1...3 {
                try await sender.post("a\(number)", to: a, id: "a\(number)")
                try await sender.post("b\(number)", to: b, id: "b\(number)")
            }
            var seen: [String: [Int64]] = [:]
            while seen[a, default: []].count + seen[b, default: []].count < 6, let frame = await reader.nextEvent() {
                if frame.type == "message", let channel = frame.channel, let offset = frame.int("offset") {
                    seen[channel, default: []].append(offset)
                    positions[channel] = frame["epoch"] as? String
                }
            }
            #expect(seen[a] == [1, 2, 3] && seen[b] == [1, 2, 3])
            await reader.disconnect()
            // Away; more messages; back on the other instance, each channel from where it was.
            for number in 4...6 {
                try await sender.post("a\(number)", to: a, id: "a\(number)")
                try await sender.post("b\(number)", to: b, id: "b\(number)")
            }
            var acks = 0
            while acks < 12, let frame = await sender.nextEvent() {
                if frame.type == "ack" { acks += 1 }
            }
            let back = try await V2Client.connect(servers[1])
            try await back.subscribe(a, since: 3, epoch: positions[a])
            try await back.subscribe(b, since: 2, epoch: positions[b])
            var resumed: [String: [String]] = [:]
            while resumed[a, default: []].count < 3 || resumed[b, default: []].count < 4, let frame = await back.nextEvent() {
                if frame.type == "message", let channel = frame.channel { resumed[channel, default: []].append(frame.data ?? "") }
            }
            #expect(resumed[a] == ["a4", "a5", "a6"])
            #expect(resumed[b] == ["b3", "b4", "b5", "b6"])
            #expect(await back.nextEvent(timeout: .milliseconds(300)) == nil)
            await back.disconnect()
            await sender.disconnect()
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    @Test func theSameIDRacingOnTwoInstancesIsPublishedOnce() async throws {
        let servers = [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)]
        do {
            let channel = uniqueChannel("race")
            let reader = try await V2Client.connect(servers[0], query: "channel=\(channel)")
            #expect(await reader.subscribed(channel) != nil)
            let ada = Person()
            let clients = [try await V2Client.connect(servers[0], person: ada), try await V2Client.connect(servers[1], person: ada)]
            let rounds = 100
            var agreed = 0
            for round in 0..<rounds {
                let id = "race-\(round)"
                // Both at once, on two instances.
                async let one: Void = clients[0].post("m\(round)", to: channel, id: id)
                async let two: Void = clients[1].post("m\(round)", to: channel, id: id)
                _ = try await (one, two)
                let acks = [await clients[0].nextEvent(), await clients[1].nextEvent()]
                if acks.allSatisfy({ $0?.type == "ack" }), acks[0]?.int("offset") == acks[1]?.int("offset"), acks[0]?.int("offset") == Int64(round + 1) {
                    agreed += 1
                }
            }
            #expect(agreed == rounds, "both sides got the one offset, every round")
            var offsets: [Int64] = []
            while offsets.count < rounds, let frame = await reader.nextEvent() {
                if let offset = frame.int("offset") { offsets.append(offset) }
            }
            #expect(offsets == Array(1...Int64(rounds)), "each id delivered once")
            #expect(await reader.nextEvent(timeout: .milliseconds(300)) == nil)
            for client in clients + [reader] { await client.disconnect() }
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    @Test(arguments: brokers)
    func pipelinedSendsArePublishedInTheOrderSent(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel("order")
            let reader = try await V2Client.connect(server, query: "channel=\(channel)")
            #expect(await reader.subscribed(channel) != nil)
            let sender = try await V2Client.connect(server, person: Person())
            // More than the socket lets wait at once (it stops reading, then goes on).
            let count = 2 * ChatV2Socket.outboxLimit + 50
            for number in 0..<count { try await sender.post("m\(number)", to: channel, id: "o\(number)") }
            var acked: [(String, Int64)] = []
            while acked.count < count, let frame = await sender.nextEvent() {
                if frame.type == "ack", let id = frame["id"] as? String, let offset = frame.int("offset") { acked.append((id, offset)) }
            }
            #expect(acked.map(\.0) == (0..<count).map { "o\($0)" })
            #expect(acked.map(\.1) == Array(1...Int64(count)))
            var data: [String] = []
            while data.count < count, let frame = await reader.nextEvent() {
                if let text = frame.data { data.append(text) }
            }
            #expect(data == (0..<count).map { "m\($0)" })
            await reader.disconnect()
            await sender.disconnect()
        }
    }

    @Test(arguments: brokers)
    func aBatchOverSeveralChannelsKeepsEachChannelsOrderAndPublishesARepeatedIDOnce(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channels = (0..<3).map { _ in uniqueChannel("mix") }
            let sender = try await V2Client.connect(server, person: Person())
            // One frame after another without waiting: they arrive in few reads, so the
            // server publishes them in few batches, each channel's runs side by side.
            var frames: [String] = []
            for number in 0..<100 {
                let channel = channels[number % 3]
                frames.append(#"{"type":"send","id":"k\#(number)","channel":"\#(channel)","data":"m\#(number)"}"#)
                if number % 10 == 0 {
                    frames.append(#"{"type":"send","id":"k\#(number)","channel":"\#(channel)","data":"again"}"#)
                }
            }
            for frame in frames { try await sender.socket.send(text: frame) }
            var offsets: [String: [Int64]] = [:]
            var byID: [String: [Int64]] = [:]
            for _ in 0..<frames.count {
                guard let ack = await sender.nextEvent(), ack.type == "ack", let id = ack["id"] as? String, let offset = ack.int("offset") else { break }
                byID[id, default: []].append(offset)
                if byID[id]!.count == 1 { offsets[ack.channel ?? "", default: []].append(offset) }
            }
            #expect(byID.count == 100 && byID.values.allSatisfy { Set($0).count == 1 }, "a repeat gets the first one's offset")
            for (index, channel) in channels.enumerated() {
                let count = (0..<100).filter { $0 % 3 == index }.count
                #expect(offsets[channel] == Array(1...Int64(count)), "\(channel): contiguous, in the order sent")
            }
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channels[0])&limit=100").body
            #expect(!history.contains("again"), "the repeats published nothing")
            await sender.disconnect()
        }
    }

    @Test func aSlowReaderGetsAGapForEachSubscriptionThatLostMessages() async throws {
        // A reader that stops reading also stops answering pings: keep the heartbeat out of the way.
        try await withServer(broker: .memory, { $0.socketQueueLimit = 16 * 1024; $0.pingInterval = .seconds(300) }) { server in
            let channels = [uniqueChannel("slow"), uniqueChannel("slow")]
            let socket = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/", subprotocols: ["chat.v2"], receiveBufferSize: 4096
            )
            let slow = V2Client(socket: socket)
            for channel in channels {
                try await slow.subscribe(channel)
                #expect(await slow.subscribed(channel) != nil)
            }
            try await socket.setReading(false)
            // 8 MB over both channels: past the kernel's buffers and the 16 KiB queue.
            let sender = try await V2Client.connect(server, person: Person())
            let count = 500
            let payload = String(repeating: "x", count: 8000)
            for number in 0..<count * 2 { try await sender.post("\(number):\(payload)", to: channels[number % 2], id: "s\(number)") }
            var acked = 0
            while acked < count * 2, let frame = await sender.nextEvent(timeout: .seconds(20)) {
                if frame.type == "ack" { acked += 1 }
            }
            #expect(acked == count * 2)
            try await socket.setReading(true)
            var delivered: [String: [Int64]] = [:]
            var gaps: [String: [(Int64, Int64)]] = [:]
            while let frame = await slow.nextEvent(timeout: .seconds(5)), let channel = frame.channel {
                if frame.type == "gap", let from = frame.int("from"), let to = frame.int("to") {
                    gaps[channel, default: []].append((from, to))
                } else if frame.type == "message", let offset = frame.int("offset") {
                    delivered[channel, default: []].append(offset)
                }
            }
            for channel in channels {
                let ranges = gaps[channel] ?? []
                #expect(ranges.count == 1, "one gap for \(channel)")
                let missed = ranges.flatMap { Array($0.0...$0.1) }
                #expect((delivered[channel, default: []] + missed).sorted() == Array(1...Int64(count)), "\(channel): what came and the gap are every offset once")
            }
            await sender.disconnect()
            await slow.disconnect()
        }
    }

    @Test func framesTheServerCannotReadAreAnsweredAndTheSocketStays() async throws {
        try await withServer(broker: .memory) { server in
            let client = try await V2Client.connect(server)
            for text in ["not json", #"{"no":"type"}"#, #"{"type":"dance"}"#, #"{"type":"send","channel":"c"}"#, #"{"type":"subscribe"}"#,
                #"{"type":"who","channel":"c"}"#]
            {
                try await client.socket.send(text: text)
                let answer = await client.nextEvent()
                #expect(answer?.type == "error", "\(text)")
            }
            // A resume that breaks the rules is that subscription's refusal.
            for text in [#"{"type":"subscribe","channel":"c","since":-1,"epoch":"e"}"#, #"{"type":"subscribe","channel":"c","since":3}"#,
                #"{"type":"subscribe","channel":"c","since":"3","epoch":"e"}"#, #"{"type":"subscribe","channel":"c","since":9223372036854775808,"epoch":"e"}"#,
                #"{"type":"subscribe","channel":"c","since":1e400,"epoch":"e"}"#, #"{"type":"subscribe","channel":"c","since":1.5,"epoch":"e"}"#,
                #"{"type":"subscribe","channel":"c","since":3,"epoch":"not-an-epoch"}"#]
            {
                try await client.socket.send(text: text)
                let answer = await client.nextEvent()
                #expect(answer?.type == "refused" && answer?.channel == "c" && answer?.int("code") == 4400, "\(text)")
            }
            #expect(try await client.answers())
            // Unsubscribing from a channel never subscribed is answered all the same.
            try await client.send(["type": "unsubscribe", "channel": "never"])
            #expect(await client.nextEvent()?.type == "unsubscribed")
            await client.disconnect()
        }
    }

    @Test func aLoneSurrogateIsRefusedForItsSendAndItsSubscription() async throws {
        try await withServer(broker: .memory) { server in
            let client = try await V2Client.connect(server, person: Person())
            try await client.socket.send(text: #"{"type":"send","id":"s1","channel":"c","data":"cut \ud83d emoji"}"#)
            let nack = await client.nextEvent()
            #expect(nack?.type == "nack" && nack?["id"] as? String == "s1" && nack?.int("status") == 400)
            #expect((nack?["message"] as? String)?.contains("surrogate") == true)
            try await client.socket.send(text: #"{"type":"subscribe","channel":"c\udc00"}"#)
            let refused = await client.nextEvent()
            #expect(refused?.type == "refused" && refused?.int("code") == 4400)
            // A pair is one character, and fine.
            try await client.socket.send(text: #"{"type":"send","id":"s2","channel":"c","data":"whole \ud83d\ude00 emoji"}"#)
            #expect(await client.nextEvent()?.type == "ack")
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=c").body
            #expect(history.contains("whole 😀 emoji"))
            await client.disconnect()
        }
    }

    @Test func aBatchCreatesNoMoreChannelsThanTheAllowance() async throws {
        try await withServer(broker: .memory, { $0.newChannelRate = RateLimit(rate: 1, burst: 3) }) { server in
            let client = try await V2Client.connect(server, person: Person())
            let frames = (0..<10).map { #"{"type":"send","id":"n\#($0)","channel":"\#(uniqueChannel("new"))","data":"x"}"# }
            for frame in frames { try await client.socket.send(text: frame) }
            var acks = 0
            var refused = 0
            for _ in 0..<10 {
                guard let answer = await client.nextEvent() else { break }
                if answer.type == "ack" { acks += 1 } else if answer.int("status") == 429 { refused += 1 }
            }
            #expect(acks == 3 && refused == 7)
            await client.disconnect()
        }
    }

    @Test func whoAnswersWithTheMembersOfASubscribedRoom() async throws {
        try await withServer(broker: .memory, { $0.presenceInterval = .milliseconds(100) }) { server in
            let channel = uniqueChannel("who")
            let ada = try await V2Client.connect(server, query: "name=Ada", person: Person())
            try await ada.subscribe(channel)
            var members: [String: Any]?
            while members == nil, let frame = await ada.next() {
                if frame.type == "members", (frame["members"] as? [Any])?.isEmpty == false { members = frame }
            }
            #expect((members?["members"] as? [[String: Any]])?.first?["name"] as? String == "Ada")
            try await ada.send(["type": "who", "channel": channel])
            var answer: [String: Any]?
            while answer == nil, let frame = await ada.next() {
                if frame.type == "members" { answer = frame }
            }
            #expect(answer?.type == "members" && answer?.int("online") == 1)
            await ada.disconnect()
        }
    }

    @Test func aClientOfferingBothGetsChatV2AndChatV1StillWorks() async throws {
        try await withServer(broker: .memory) { server in
            let both = try await ChatWebSocket.connect(port: server.port, path: "/wb/", subprotocols: ["chat.v1", "chat.v2"])
            #expect(both.subprotocol == "chat.v2")
            await both.disconnect()
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=c1", subprotocols: ["chat.v1"])
            #expect(v1.subprotocol == "chat.v1")
            _ = try await ChatHTTP.send(port: server.port, data: "x", channel: "c1")
            var text: String?
            while text == nil, let next = await v1.nextText() {
                if next.contains(#""type":"message""#) { text = next }
            }
            #expect(text?.contains(#""data":"x""#) == true)
            await v1.disconnect()
        }
    }
}
