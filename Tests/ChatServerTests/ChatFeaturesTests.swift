@testable import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Redis
import Testing

extension V2Client {
    /// The `ack` or `nack` of `id`, skipping whatever else arrives.
    func answer(to id: String) async -> [String: Any]? {
        while let frame = await next() {
            if ["ack", "nack"].contains(frame.type), frame["id"] as? String == id { return frame }
        }
        return nil
    }

    /// Sends `frame` (with its `id`) and waits for its answer.
    func ask(_ frame: [String: Any]) async throws -> [String: Any]? {
        try await send(frame)
        return await answer(to: frame["id"] as? String ?? "")
    }

    /// The next frame of `type`, skipping others; `nil` if none within `timeout`.
    func next(_ type: String, timeout: Duration = .seconds(5)) async -> [String: Any]? {
        while let frame = await next(timeout: timeout) {
            if frame.type == type { return frame }
        }
        return nil
    }

    /// Sends frames in one write: the server reads them, and publishes them, as one batch.
    func sendTogether(_ frames: [[String: Any]]) async throws {
        try await socket.send(texts: try frames.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) })
    }

    /// Subscribes and waits for `subscribed`; returns it.
    func subscribedFrame(_ channel: String) async throws -> [String: Any]? {
        try await subscribe(channel)
        return await next("subscribed")
    }
}

/// A channel's `/history`, parsed.
func history(_ port: Int, _ channel: String, headers: [(String, String)] = []) async throws -> [[String: Any]] {
    let answer = try await ChatHTTP.request("GET", port: port, path: "/history?channel=\(channel)", headers: headers)
    let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
    return json?["messages"] as? [[String: Any]] ?? []
}

@Suite("What people expect of a chat: who sent it, typing, edits, deletes, reactions, read state")
struct ChatFeaturesTests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    @Test(arguments: brokers)
    func everyMessageSaysWhoItIsFrom(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let ada = Person()
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            let sender = try await V2Client.connect(server, person: ada)
            #expect(try await sender.ask(["type": "send", "id": "m1", "channel": channel, "data": "over the socket"])?.type == "ack")
            #expect(try await ChatHTTP.send(port: server.port, data: "over POST", channel: channel, headers: [ada.header]).status == 200)
            #expect(try await ChatHTTP.send(port: server.port, data: "from a backend", channel: channel).status == 200)
            var froms: [String?] = []
            while froms.count < 3, let text = await v1.nextText() {
                guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], frame.type == "message" else { continue }
                froms.append(frame["from"] as? String)
            }
            #expect(froms == [ada.id, ada.id, nil], "a sender without an identity has no from")
            #expect(try await history(server.port, channel).map { $0["from"] as? String } == [ada.id, ada.id, nil])
            await v1.disconnect()
            await sender.disconnect()
        }
    }

    @Test func typingReachesTheOthersOnEveryInstanceAtMostEveryTwoSecondsAndIsNeverKept() async throws {
        let servers = [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)]
        defer { Task { for server in servers { await server.stop() } } }
        let channel = uniqueChannel()
        let (ada, bob) = (Person(), Person())
        let typist = try await V2Client.connect(servers[0], person: ada)
        let adasOtherTab = try await V2Client.connect(servers[1], person: ada)
        let reader = try await V2Client.connect(servers[1], person: bob)
        for client in [typist, adasOtherTab, reader] { _ = try await client.subscribedFrame(channel) }
        #expect(try await typist.ask(["type": "send", "id": "first", "channel": channel, "data": "hi"])?.type == "ack")
        try await typist.send(["type": "typing", "channel": channel])
        let typing = try #require(await reader.next("typing"))
        #expect(typing.channel == channel)
        #expect((typing["member"] as? [String: Any])?["id"] as? String == ada.id)
        #expect(typing["offset"] == nil, "typing has no offset")
        // A second one within 2 s is dropped; so is one to the typist's own tabs.
        try await typist.send(["type": "typing", "channel": channel])
        #expect(await reader.next("typing", timeout: .milliseconds(600)) == nil)
        #expect(await adasOtherTab.next("typing", timeout: .milliseconds(100)) == nil, "not to the typist's other sockets")
        try await Task.sleep(for: .seconds(2))
        try await typist.send(["type": "typing", "channel": channel])
        #expect(await reader.next("typing") != nil, "relayed again after 2 s")
        // Never stored: the history holds the one message, the offset did not move.
        let kept = try await history(servers[0].port, channel)
        #expect(kept.count == 1 && kept.allSatisfy { $0.type == "message" })
        let resumed = try await V2Client.connect(servers[0])
        try await resumed.subscribe(channel, since: 0, epoch: kept.first?["epoch"] as? String)
        #expect(await resumed.next("subscribed")?.int("offset") == 1)
        #expect(await resumed.next("message")?.data == "hi")
        #expect(await resumed.next("typing", timeout: .milliseconds(300)) == nil)
        // Typing where one is not subscribed is answered, not relayed.
        try await typist.send(["type": "typing", "channel": uniqueChannel()])
        #expect((await typist.next("error"))?["message"] as? String ?? "" != "")
        for client in [typist, adasOtherTab, reader, resumed] { await client.disconnect() }
    }

    @Test func theMemoryBrokerRelaysTypingToTheOthersToo() async throws {
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel()
            let (ada, bob) = (Person(), Person())
            let typist = try await V2Client.connect(server, person: ada)
            let reader = try await V2Client.connect(server, person: bob)
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", headers: [bob.header], subprotocols: ["chat.v1"])
            for client in [typist, reader] { _ = try await client.subscribedFrame(channel) }
            try await typist.send(["type": "typing", "channel": channel])
            #expect((await reader.next("typing")?["member"] as? [String: Any])?["id"] as? String == ada.id)
            var v1Typing = false
            while !v1Typing, let text = await v1.nextText() { v1Typing = text.contains(#""type":"typing""#) }
            #expect(v1Typing, "chat.v1 sockets share the frames")
            #expect(await typist.next("typing", timeout: .milliseconds(300)) == nil)
            await v1.disconnect()
            await typist.disconnect()
            await reader.disconnect()
        }
    }

    @Test(arguments: brokers)
    func theAuthorEditsAndDeletesAndEveryoneSeesItLiveInHistoryAndOnResume(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let (ada, bob) = (Person(), Person())
            let author = try await V2Client.connect(server, person: ada)
            let other = try await V2Client.connect(server, person: bob)
            _ = try await other.subscribedFrame(channel)
            let original = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            let sent = try #require(try await author.ask(["type": "send", "id": "m1", "channel": channel, "data": "helo wrold"]))
            let of = try #require(sent.int("offset"))
            #expect(await other.next("message")?.data == "helo wrold")

            let edited = try #require(try await author.ask(["type": "edit", "id": "e1", "channel": channel, "of": of, "data": "hello world"]))
            #expect(edited.type == "ack")
            let edit = try #require(await other.next("edit"))
            #expect(edit.int("of") == of && edit.int("offset") == edited.int("offset") && edit.data == "hello world")
            #expect(edit["from"] as? String == ada.id && edit.int("time") != nil && edit["epoch"] as? String == sent["epoch"] as? String)
            // The same id again: the first answer, nothing new.
            #expect(try await author.ask(["type": "edit", "id": "e1", "channel": channel, "of": of, "data": "hello world"])?.int("offset") == edited.int("offset"))

            // Only the author; only messages; only what is there.
            let notYours = try #require(try await other.ask(["type": "edit", "id": "x1", "channel": channel, "of": of, "data": "mine now"]))
            #expect(notYours.type == "nack" && notYours.int("status") == 403)
            #expect((notYours["message"] as? String)?.contains("Only its author may edit") == true)
            #expect(try await other.ask(["type": "delete", "id": "x2", "channel": channel, "of": of])?.int("status") == 403)
            #expect(try await author.ask(["type": "edit", "id": "x3", "channel": channel, "of": 999, "data": "?"])?.int("status") == 404)
            #expect(try await author.ask(["type": "edit", "id": "x4", "channel": channel, "of": edited.int("offset")!, "data": "?"])?.int("status") == 404)
            #expect(try await author.ask(["type": "edit", "id": "x5", "channel": channel, "of": of, "data": " "])?.int("status") == 400)
            #expect(try await author.ask(["type": "edit", "id": "x6", "channel": channel, "of": 0, "data": "a"])?.int("status") == 400)
            #expect(try await author.ask(["type": "edit", "id": "x7", "channel": uniqueChannel(), "of": 1, "data": "a"])?.int("status") == 404)

            var kept = try await history(server.port, channel)
            #expect(kept.map(\.type) == ["message", "edit"])
            #expect(kept[0].data == "hello world" && kept[0].int("edited") != nil)

            let deleted = try #require(try await author.ask(["type": "delete", "id": "d1", "channel": channel, "of": of]))
            #expect(deleted.type == "ack")
            let delete = try #require(await other.next("delete"))
            #expect(delete.int("of") == of && delete.int("offset") == deleted.int("offset") && delete["from"] as? String == ada.id)
            #expect(try await author.ask(["type": "edit", "id": "e2", "channel": channel, "of": of, "data": "back"])?.int("status") == 403)
            // The original protocol has words only: the message, never the changes.
            #expect(await original.nextText() == "helo wrold")
            #expect(await original.nextText(timeout: .milliseconds(300)) == nil)
            await original.disconnect()

            kept = try await history(server.port, channel)
            #expect(kept.map(\.type) == ["message", "edit", "delete"])
            #expect(kept[0]["deleted"] as? Bool == true && kept[0]["data"] == nil, "the text is gone")
            #expect(kept[1]["deleted"] as? Bool == true && kept[1]["data"] == nil, "and so is the edit's")
            #expect(kept.map { $0.int("offset") } == [of, edited.int("offset"), deleted.int("offset")])
            #expect(kept[0]["from"] as? String == ada.id)
            if broker == .redis {
                let redis = try await connectToRedis()
                let stream = try await redis.send(RedisCommand("XRANGE", .string(RedisKeys.history(ChannelName(channel)!)), "-", "+"))
                #expect(!"\(stream)".contains("hello") && !"\(stream)".contains("helo"), "no text of it is left in Redis")
                redis.close()
            }

            // A resume from before replays all three, in order, as history has them.
            let back = try await V2Client.connect(server)
            try await back.subscribe(channel, since: 0, epoch: sent["epoch"] as? String)
            var replayed: [String] = []
            while replayed.count < 3, let frame = await back.nextEvent() {
                if let type = frame.type, ["message", "edit", "delete"].contains(type) { replayed.append(type + ":\(frame.int("offset") ?? 0)") }
            }
            #expect(replayed == ["message:\(of)", "edit:\(of + 1)", "delete:\(of + 2)"])
            for client in [author, other, back] { await client.disconnect() }
        }
    }

    @Test func changesMadeOnOneInstanceReachTheOtherLiveAndAfterAReload() async throws {
        let servers = [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)]
        defer { Task { for server in servers { await server.stop() } } }
        let channel = uniqueChannel()
        let ada = Person()
        let author = try await V2Client.connect(servers[0], person: ada)
        let reader = try await V2Client.connect(servers[1], person: Person())
        _ = try await reader.subscribedFrame(channel)
        let first = try #require(try await author.ask(["type": "send", "id": "m1", "channel": channel, "data": "one"])?.int("offset"))
        let second = try #require(try await author.ask(["type": "send", "id": "m2", "channel": channel, "data": "two"])?.int("offset"))
        #expect(try await author.ask(["type": "edit", "id": "e", "channel": channel, "of": first, "data": "one!"])?.type == "ack")
        #expect(try await author.ask(["type": "delete", "id": "d", "channel": channel, "of": second])?.type == "ack")
        #expect(try await author.ask(["type": "react", "id": "r", "channel": channel, "of": first, "emoji": "🎉"])?.type == "ack")
        var live: [String] = []
        while live.count < 5, let frame = await reader.nextEvent() {
            if let type = frame.type, ["message", "edit", "delete", "react"].contains(type) { live.append("\(type):\(frame.int("of") ?? frame.int("offset") ?? 0)") }
        }
        #expect(live == ["message:\(first)", "message:\(second)", "edit:\(first)", "delete:\(second)", "react:\(first)"])
        // What a page reloaded on the other instance reads.
        let kept = try await history(servers[1].port, channel)
        #expect(kept.first?.data == "one!" && kept.first?["reactions"] as? [String: [String]] == ["🎉": [ada.id]])
        #expect(kept.dropFirst().first?["deleted"] as? Bool == true)
        await author.disconnect()
        await reader.disconnect()
    }

    @Test(arguments: brokers)
    func anEditAfterTheWindowIsRefused(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.editWindow = .milliseconds(50) }) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            let sent = try #require(try await author.ask(["type": "send", "id": "m", "channel": channel, "data": "soon fixed"]))
            try await Task.sleep(for: .milliseconds(200))
            let late = try #require(try await author.ask(["type": "edit", "id": "e", "channel": channel, "of": sent.int("offset")!, "data": "too late"]))
            #expect(late.int("status") == 403 && (late["message"] as? String)?.contains("can no longer be edited") == true)
            #expect(try await author.ask(["type": "delete", "id": "d", "channel": channel, "of": sent.int("offset")!])?.type == "ack", "deleting has no window")
            await author.disconnect()
        }
    }

    @Test(arguments: brokers)
    func reactionsToggleAndHistoryShowsWhoReactedWithWhat(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let (ada, bob) = (Person(), Person())
            let a = try await V2Client.connect(server, person: ada)
            let b = try await V2Client.connect(server, person: bob)
            let watcher = try await V2Client.connect(server, person: Person())
            _ = try await watcher.subscribedFrame(channel)
            let of = try #require(try await a.ask(["type": "send", "id": "m", "channel": channel, "data": "lunch?"])?.int("offset"))
            func react(_ client: V2Client, _ emoji: String, id: String) async throws -> [String: Any]? {
                try await client.ask(["type": "react", "id": id, "channel": channel, "of": of, "emoji": emoji])
            }
            #expect(try await react(b, "👍", id: "r1")?.type == "ack")
            var frame = try #require(await watcher.next("react"))
            #expect(frame["emoji"] as? String == "👍" && frame["on"] as? Bool == true && frame["from"] as? String == bob.id && frame.int("of") == of)
            #expect(try await react(a, "👍", id: "r2")?.type == "ack")
            #expect(try await react(a, "❤️", id: "r3")?.type == "ack")
            #expect(try await react(b, "👍", id: "r4")?.type == "ack")
            for expected in [true, true, false] {
                frame = try #require(await watcher.next("react"))
                #expect(frame["on"] as? Bool == expected)
            }
            let kept = try await history(server.port, channel)
            #expect(kept.map(\.type) == ["message", "react", "react", "react", "react"])
            let reactions = try #require(kept[0]["reactions"] as? [String: [String]])
            #expect(reactions == ["👍": [ada.id], "❤️": [ada.id]])

            // One emoji, and at most 20 different ones on a message.
            #expect(try await react(a, "a", id: "bad1")?.int("status") == 400)
            #expect(try await react(a, "👍👍", id: "bad2")?.int("status") == 400)
            let more = ["😀", "😂", "😍", "🎉", "🔥", "🙏", "👀", "💯", "✅", "🤔", "😢", "😮", "🚀", "🍕", "☕", "🌟", "🐛", "🥳"]
            for (index, emoji) in more.enumerated() { #expect(try await react(a, emoji, id: "many\(index)")?.type == "ack") }
            let tooMany = try #require(try await react(b, "🦄", id: "over"))
            #expect(tooMany.int("status") == 400 && (tooMany["message"] as? String)?.contains("20 different reactions") == true)
            await watcher.disconnect()
            await a.disconnect()
            await b.disconnect()
        }
    }

    @Test func readStateFollowsThePersonOverSocketsInstancesAndARestart() async throws {
        var servers = [try await TestServer.start(broker: .redis), try await TestServer.start(broker: .redis)]
        let channel = uniqueChannel()
        let (ada, bob) = (Person(), Person())
        let sender = try await V2Client.connect(servers[0], person: bob)
        for number in 1...3 { _ = try await sender.ask(["type": "send", "id": "m\(number)", "channel": channel, "data": "\(number)"]) }
        let phone = try await V2Client.connect(servers[0], person: ada)
        let laptop = try await V2Client.connect(servers[1], person: ada)
        #expect(try await phone.subscribedFrame(channel)?.int("read") == 0)
        #expect(try await laptop.subscribedFrame(channel)?.int("read") == 0)
        let bobs = try await sender.subscribedFrame(channel)
        #expect(bobs?.int("read") == 0)
        try await phone.send(["type": "read", "channel": channel, "offset": 2])
        let told = try #require(await laptop.next("read"))
        #expect(told.channel == channel && told.int("offset") == 2)
        #expect(await phone.next("read")?.int("offset") == 2, "every socket of the person")
        let othersRead = await sender.next("read", timeout: .milliseconds(300))
        let othersSeen = await sender.next("seen", timeout: .milliseconds(100))
        #expect(othersRead == nil && othersSeen == nil, "not the others' in a room of many")
        // Only forward, and never past the last message.
        try await laptop.send(["type": "read", "channel": channel, "offset": 1])
        #expect(await phone.next("read", timeout: .milliseconds(400)) == nil)
        try await laptop.send(["type": "read", "channel": channel, "offset": 99])
        #expect(await phone.next("read")?.int("offset") == 3)
        // Kept in Redis: another socket, after a restart, still knows.
        await servers[1].stop()
        servers[1] = try await TestServer.start(broker: .redis)
        let tablet = try await V2Client.connect(servers[1], person: ada)
        #expect(try await tablet.subscribedFrame(channel)?.int("read") == 3)
        // A read of a channel one is not subscribed to is answered.
        try await tablet.send(["type": "read", "channel": uniqueChannel(), "offset": 1])
        #expect(await tablet.next("error") != nil)
        for client in [sender, phone, laptop, tablet] { await client.disconnect() }
        for server in servers { await server.stop() }
    }

    @Test func aReactionIsOneEmojiAndNothingThatMerelyLooksLikeOne() {
        let emoji = ["👍", "❤️", "👍🏽", "☝🏽", "👨‍👩‍👧", "👩‍💻", "🧑🏽‍🚀", "🏳️‍🌈", "🇯🇵", "1️⃣", "#\u{20E3}", "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}", "☕", "🦄", "🏴‍☠️", "🏴"]
        for text in emoji { #expect(MessageText.isOneEmoji(text), "\(text.unicodeScalars.map { String($0.value, radix: 16) })") }
        let others = [
            "", "a", "1", "❤", "👍👍", "a\u{FE0F}", " \u{FE0F}", "\u{00A0}\u{FE0F}", "\u{3164}\u{FE0F}", "<\u{FE0F}", "\u{FE0F}", "\u{20E3}",
            "a\u{20E3}", "🇺", "🇺\u{FE0F}", "👍\u{200D}", "\u{200D}", "👍\u{FE0F}\u{FE0F}", "👍\u{0301}", "👍" + String(repeating: "\u{E0020}", count: 3),
            "👍🏽🏽", String(repeating: "👍\u{200D}", count: 20) + "👍", "🏴\u{E0078}\u{E0079}\u{E007A}\u{E007F}", "🏴\u{E0067}\u{E007F}\u{E007F}",
        ]
        for text in others { #expect(!MessageText.isOneEmoji(text), "\(text.unicodeScalars.map { String($0.value, radix: 16) })") }
    }

    @Test(arguments: brokers)
    func whatOnceWentWrongWithChangesHolds(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let ada = Person()
            let author = try await V2Client.connect(server, person: ada)
            let of = try #require(try await author.ask(["type": "send", "id": "K1", "channel": channel, "data": "orig"])?.int("offset"))
            // An offset too large for Lua's numbers to write as digits: 404, and the
            // sends around it in the same read are published and acknowledged as such.
            try await author.socket.send(texts: [
                #"{"type":"send","id":"pA","channel":"\#(channel)","data":"A"}"#,
                #"{"type":"edit","id":"pE","channel":"\#(channel)","of":100000000000000,"data":"z"}"#,
                #"{"type":"send","id":"pB","channel":"\#(channel)","data":"B"}"#,
            ])
            var answers: [String: String] = [:]
            while answers.count < 3, let frame = await author.next() {
                if let id = frame["id"] as? String, let type = frame.type { answers[id] = type + ":\(frame.int("status") ?? 0)" }
            }
            #expect(answers == ["pA": "ack:0", "pE": "nack:404", "pB": "ack:0"])
            // An id used for a message and again for its delete is two requests.
            #expect(try await author.ask(["type": "delete", "id": "K1", "channel": channel, "of": of])?.type == "ack")
            var kept = try await history(server.port, channel)
            #expect(kept.first?["deleted"] as? Bool == true && kept.first?["edited"] == nil)
            // Two sockets without an identity are two people, even from one address.
            let first = try await V2Client.connect(server)
            let second = try await V2Client.connect(server)
            let one = try #require(try await first.ask(["type": "send", "id": "SHARED", "channel": channel, "data": "mine"]))
            let two = try #require(try await second.ask(["type": "send", "id": "SHARED", "channel": channel, "data": "also mine"]))
            #expect(one.type == "ack" && two.type == "ack" && one.int("offset") != two.int("offset"))
            kept = try await history(server.port, channel)
            #expect(kept.compactMap(\.data).contains("also mine"))
            // A refused change stops nothing after it in the same read.
            try await author.socket.send(texts: [
                #"{"type":"react","id":"rX","channel":"\#(channel)","of":\#(of),"emoji":"👍"}"#, #"{"type":"send","id":"S1","channel":"\#(channel)","data":"after"}"#,
            ])
            answers = [:]
            while answers.count < 2, let frame = await author.next() {
                if let id = frame["id"] as? String, let type = frame.type { answers[id] = type + ":\(frame.int("status") ?? 0)" }
            }
            #expect(answers == ["rX": "nack:403", "S1": "ack:0"])
            for client in [author, first, second] { await client.disconnect() }
        }
    }

    @Test(arguments: brokers)
    func theAuthorEditsInACappedRoomWithoutAPlaceThere(broker: ChatConfiguration.BrokerKind) async throws {
        let desk = uniqueChannel("desk")
        // A lease of 4 s, renewed every 1.3 s: long enough that a busy machine renews the
        // taker's place in time, short enough to wait out the author's.
        try await withServer(broker: broker, { $0.channelCaps = [ChannelName(desk)!: 1]; $0.presenceLifetime = .seconds(4) }) { server in
            let (ada, bob) = (Person(), Person())
            let author = try await V2Client.connect(server, person: ada)
            // Posting takes the one place; it lasts a lease, then is free again.
            let of = try #require(try await author.ask(["type": "send", "id": "D1", "channel": desk, "data": "at the desk"])?.int("offset"))
            try await Task.sleep(for: .milliseconds(4300))
            let taker = try await V2Client.connect(server, person: bob)
            #expect(try await taker.subscribedFrame(desk)?.type == "subscribed", "the place was free again")
            #expect(try await author.ask(["type": "send", "id": "D2", "channel": desk, "data": "me again"])?.int("status") == 403, "full now")
            #expect(try await author.ask(["type": "edit", "id": "D3", "channel": desk, "of": of, "data": "at the desk!"])?.type == "ack")
            // In one read: an edit needs no place, the send after it still does.
            let second = try #require(try await author.ask(["type": "edit", "id": "D5", "channel": desk, "of": of, "data": "still mine"]))
            #expect(second.type == "ack")
            try await author.sendTogether([
                ["type": "edit", "id": "D6", "channel": desk, "of": of, "data": "and again"], ["type": "send", "id": "D7", "channel": desk, "data": "sneaking in"],
            ])
            var answers: [String: Int64] = [:]
            while answers.count < 2, let frame = await author.next() {
                if let id = frame["id"] as? String { answers[id] = frame.int("status") ?? 0 }
            }
            #expect(answers == ["D6": 0, "D7": 403])
            #expect(try await author.ask(["type": "delete", "id": "D4", "channel": desk, "of": of])?.type == "ack")
            await author.disconnect()
            await taker.disconnect()
        }
    }

    @Test(arguments: brokers)
    func aNewEpochStartsWithNobodyHavingReadIt(broker: ChatConfiguration.BrokerKind) async throws {
        // Long enough that a busy machine reads before the channel expires.
        try await withServer(broker: broker, { $0.historyTTL = .seconds(3) }) { server in
            let channel = uniqueChannel()
            let reader = try await V2Client.connect(server, person: Person())
            for number in 1...3 { _ = try await reader.ask(["type": "send", "id": "m\(number)", "channel": channel, "data": "\(number)"]) }
            _ = try await reader.subscribedFrame(channel)
            try await reader.send(["type": "read", "channel": channel, "offset": 3])
            #expect(await reader.next("read")?.int("offset") == 3)
            try await Task.sleep(for: .milliseconds(3500))
            _ = try await reader.ask(["type": "send", "id": "again", "channel": channel, "data": "new epoch"])
            try await reader.send(["type": "unsubscribe", "channel": channel])
            _ = await reader.next("unsubscribed")
            let subscribed = try #require(try await reader.subscribedFrame(channel))
            #expect(subscribed.int("offset") == 1 && subscribed.int("read") == 0)
            await reader.disconnect()
        }
    }

    @Test func ghostsAndStatesStayWithinTheHistorysSpan() async throws {
        try await withServer(broker: .redis, { $0.historySize = 10 }) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            for cycle in 0..<40 {
                let of = try #require(try await author.ask(["type": "send", "id": "m\(cycle)", "channel": channel, "data": "x"])?.int("offset"))
                for edit in 0..<3 { _ = try await author.ask(["type": "edit", "id": "e\(cycle)-\(edit)", "channel": channel, "of": of, "data": "y\(edit)"]) }
                _ = try await author.ask(["type": "delete", "id": "d\(cycle)", "channel": channel, "of": of])
            }
            let redis = try await connectToRedis()
            let states = try await redis.send(RedisCommand("HLEN", .string(RedisKeys.changes(ChannelName(channel)!)))).integer ?? 0
            redis.close()
            #expect(states > 0 && states <= 51, "\(states) states for a history of 10")
            let kept = try await history(server.port, channel)
            #expect(!kept.isEmpty && kept.count <= 100)
            await author.disconnect()
        }
    }

    @Test func aHoleOfLostOffsetsInAChangedChannelIsReadAcross() async throws {
        try await withServer(broker: .redis) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            for number in 1...3 { _ = try await author.ask(["type": "send", "id": "m\(number)", "channel": channel, "data": "\(number)"]) }
            #expect(try await author.ask(["type": "edit", "id": "e", "channel": channel, "of": 1, "data": "one"])?.type == "ack")
            // Redis lost writes and the counter was raised past them (the fence): offsets
            // 5 … 5000 were never handed out.
            let redis = try await connectToRedis()
            _ = try await redis.send(RedisCommand("HSET", .string(RedisKeys.meta(ChannelName(channel)!)), "offset", "5000"))
            redis.close()
            let after = try #require(try await author.ask(["type": "send", "id": "m4", "channel": channel, "data": "after the hole"]))
            #expect(after.int("offset") == 5001)
            let answer = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=4")
            let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
            let messages = json?["messages"] as? [[String: Any]] ?? []
            #expect(messages.map { $0.int("offset") } == [5001])
            #expect(try await history(server.port, channel).first?.data == "one")
            await author.disconnect()
        }
    }

    @Test func ghostsAfterAHoleOfLostOffsetsAreReadToo() async throws {
        try await withServer(broker: .redis) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            for number in 1...3 { _ = try await author.ask(["type": "send", "id": "m\(number)", "channel": channel, "data": "\(number)"]) }
            let redis = try await connectToRedis()
            _ = try await redis.send(RedisCommand("HSET", .string(RedisKeys.meta(ChannelName(channel)!)), "offset", "1000"))
            redis.close()
            for number in 1001...1006 { _ = try await author.ask(["type": "send", "id": "m\(number)", "channel": channel, "data": "\(number)"]) }
            #expect(try await author.ask(["type": "delete", "id": "d", "channel": channel, "of": 1002])?.type == "ack")
            let answer = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=3&limit=4")
            let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
            let messages = json?["messages"] as? [[String: Any]] ?? []
            #expect(messages.map { $0.int("offset") } == [1001, 1002, 1003, 1004])
            #expect(messages.dropFirst().first?["deleted"] as? Bool == true)
            await author.disconnect()
        }
    }

    @Test(arguments: brokers)
    func aRefusedChangeStopsNothingInABatchLongerThanOneScript(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            _ = try await author.ask(["type": "send", "id": "first", "channel": channel, "data": "first"])
            var frames: [[String: Any]] = [["type": "react", "id": "bad", "channel": channel, "of": 99, "emoji": "👍"]]
            for number in 1...70 { frames.append(["type": "send", "id": "s\(number)", "channel": channel, "data": "\(number)"]) }
            try await author.sendTogether(frames)
            var answers: [String: String] = [:]
            while answers.count < 71, let frame = await author.next() {
                if let id = frame["id"] as? String, let type = frame.type { answers[id] = type }
            }
            #expect(answers["bad"] == "nack")
            #expect(answers.filter { $0.key != "bad" && $0.value == "ack" }.count == 70)
            await author.disconnect()
        }
    }

    @Test func aReactionNeedsAProvenIdentityAndAMessageHoldsAThousand() async throws {
        var state = MessageState()
        for index in 0..<MessageState.maximumReactors { #expect(state.toggle(["👍", "🎉"][index % 2], from: "p\(index)") == true) }
        #expect(state.toggle("👍", from: "one more") == nil)
        #expect(state.toggle("🚀", from: "one more") == nil)
        #expect(state.toggle("👍", from: "p0") == false, "taking one back is always allowed")
        try await withServer(broker: .memory) { server in
            let channel = uniqueChannel()
            let author = try await V2Client.connect(server, person: Person())
            let of = try #require(try await author.ask(["type": "send", "id": "m", "channel": channel, "data": "hi"])?.int("offset"))
            let stranger = try await V2Client.connect(server)
            let refused = try #require(try await stranger.ask(["type": "react", "id": "r", "channel": channel, "of": of, "emoji": "👍"]))
            #expect(refused.int("status") == 403 && (refused["message"] as? String)?.contains("needs an identity") == true)
            await author.disconnect()
            await stranger.disconnect()
        }
    }

    @Test func theOriginalProtocolIsNotSentWhatIsLeftOfADeletedMessage() {
        let ghost = Message(
            channel: ChannelName("c")!, offset: 5, epoch: "e", time: 0, data: ByteBuffer(), from: "a", kind: .message, state: MessageState(deleted: true)
        )
        let frames = WireFormat.frames(of: .message(ghost))
        #expect(frames[WireFormat.raw.rawValue] == nil)
        #expect(frames[WireFormat.chatV1.rawValue].map { String(buffer: $0) }?.contains(#""deleted":true"#) == true)
    }

    @Test func readStatesAskedTogetherAreReadTogether() async throws {
        let memory = MemoryBroker { _ in }
        let channel = ChannelName(uniqueChannel())!
        for number in 1...5 { _ = try await memory.publish(ByteBuffer(string: "\(number)"), to: channel) }
        _ = try await memory.markRead(Member(id: "p3", name: nil), in: channel, upTo: 3)
        let broker = SlowReadStates(memory)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let states = ReadStates(broker: broker, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let answers = try await loop.submit {
            let promises = (0..<100).map { _ in loop.makePromise(of: Int64.self) }
            for (index, promise) in promises.enumerated() {
                states.read(["p\(index)"], of: channel, on: loop) { promise.completeWith($0.map { $0["p\(index)"] ?? -1 }) }
            }
            return EventLoopFuture.whenAllSucceed(promises.map(\.futureResult), on: loop)
        }.flatMap { $0 }.get()
        #expect(answers[3] == 3 && answers.enumerated().allSatisfy { $0.offset == 3 || $0.element == 0 })
        #expect(broker.calls.withLockedValue { $0 } == 2, "the first alone, the 99 that came meanwhile together")
    }

    @Test(arguments: brokers)
    func inAOneToOneRoomTheOtherPersonSeesWhatWasSeen(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (ada, bob) = (Person(), Person())
            let room = try #require(RoomPolicy.directRoom(ada.id, bob.id)).rawValue
            let a = try await V2Client.connect(server, person: ada)
            let b = try await V2Client.connect(server, person: bob)
            _ = try await a.subscribedFrame(room)
            _ = try await b.subscribedFrame(room)
            let of = try #require(try await a.ask(["type": "send", "id": "m", "channel": room, "data": "there?"])?.int("offset"))
            try await b.send(["type": "read", "channel": room, "offset": of])
            let seen = try #require(await a.next("seen"))
            #expect(seen.int("offset") == of && (seen["member"] as? [String: Any])?["id"] as? String == bob.id)
            #expect(await b.next("read")?.int("offset") == of)
            #expect(await b.next("seen", timeout: .milliseconds(300)) == nil, "not to the reader")
            // A page opened later learns it from `subscribed`: what the other person has seen.
            let again = try await V2Client.connect(server, person: ada)
            let subscribed = try #require(try await again.subscribedFrame(room))
            #expect(subscribed.int("seen") == of && subscribed.int("read") == 0)
            let elsewhere = try await V2Client.connect(server, person: ada)
            #expect(try await elsewhere.subscribedFrame(uniqueChannel())?["seen"] == nil, "only a one-to-one room says it")
            await again.disconnect()
            await elsewhere.disconnect()
            await a.disconnect()
            await b.disconnect()
        }
    }

    @Test func aCappedRoomTakesMessagesOnlyFromItsPeople() async throws {
        try await withServer(broker: .memory, { $0.channelCaps = [ChannelName("desk")!: 1] }) { server in
            let (ada, bob) = (Person(), Person())
            let member = try await V2Client.connect(server, person: ada)
            _ = try await member.subscribedFrame("desk")
            #expect(try await member.ask(["type": "send", "id": "in", "channel": "desk", "data": "hello"])?.type == "ack")
            let outsider = try await V2Client.connect(server, person: bob)
            let refused = try #require(try await outsider.ask(["type": "send", "id": "out", "channel": "desk", "data": "let me in"]))
            #expect(refused.int("status") == 403 && (refused["message"] as? String)?.contains("This room is full") == true)
            let posted = try await ChatHTTP.send(port: server.port, data: "by POST", channel: "desk", headers: [bob.header])
            #expect(posted.status == 403)
            #expect(try await history(server.port, "desk").map(\.data) == ["hello"])
            await member.disconnect()
            await outsider.disconnect()
        }
    }
}

/// A broker whose read-state reads take a while and are counted (and its moderation
/// reads counted); the rest is the memory broker's.
final class SlowReadStates: Broker {
    let base: MemoryBroker
    let calls = NIOLockedValueBox(0)
    let moderationReads = NIOLockedValueBox(0)
    init(_ base: MemoryBroker) { self.base = base }

    func readStates(of ids: [String], in channel: ChannelName) async throws -> [String: Int64] {
        calls.withLockedValue { $0 += 1 }
        try await Task.sleep(for: .milliseconds(100))
        return try await base.readStates(of: ids, in: channel)
    }

    func publish(_ request: PublishRequest) async throws -> Publication { try await base.publish(request) }
    func history(of channel: ChannelName, after offset: Int64?, limit: Int) async throws -> History {
        try await base.history(of: channel, after: offset, limit: limit)
    }
    func join(_ channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<Void> { base.join(channel, on: eventLoop) }
    func leave(_ channel: ChannelName) { base.leave(channel) }
    func typing(_ member: Member, in channel: ChannelName) async throws { try await base.typing(member, in: channel) }
    func markRead(_ member: Member, in channel: ChannelName, upTo offset: Int64) async throws -> Int64 {
        try await base.markRead(member, in: channel, upTo: offset)
    }
    func updatePresence(
        of channel: ChannelName, instance: String, refreshing: [Member], leaving: [String], lifetime: Duration, grace: Duration, listLimit: Int
    ) async throws -> RoomSnapshot {
        try await base.updatePresence(
            of: channel, instance: instance, refreshing: refreshing, leaving: leaving, lifetime: lifetime, grace: grace, listLimit: listLimit
        )
    }
    func admit(_ member: String, to channel: ChannelName, instance: String, cap: Int, lifetime: Duration) async throws -> Bool {
        try await base.admit(member, to: channel, instance: instance, cap: cap, lifetime: lifetime)
    }
    func sharedSecret(named name: String, proposed: String) async throws -> String { try await base.sharedSecret(named: name, proposed: proposed) }
    func moderate(_ action: ModerationAction, in channel: ChannelName) async throws -> ModerationOutcome { try await base.moderate(action, in: channel) }
    func moderation(of channel: ChannelName) async throws -> RoomModeration {
        moderationReads.withLockedValue { $0 += 1 }
        return try await base.moderation(of: channel)
    }
    func start() async throws {}
    func close() {}
    var services: [any Service] { [] }
    func notReadyReason() async -> String? { nil }
    var description: String { "slow read states" }
}
