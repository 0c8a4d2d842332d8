@testable import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import NIOConcurrencyHelpers
import Redis
import Testing

/// The admin token of the test servers.
private let adminToken = "test-admin-token-0123456789"

/// A moderation API request with the admin token (or `token`), fields urlencoded.
private func api(
    _ port: Int, _ action: String, _ fields: [String: String], method: String = "POST", token: String? = adminToken, json: Bool = false
) async throws -> HTTPResult {
    let form = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\(ChatHTTP.formEncode($0.value))" }.joined(separator: "&")
    var headers: [(String, String)] = token.map { [("Authorization", "Bearer \($0)")] } ?? []
    if method == "DELETE" {
        return try await ChatHTTP.request(method, port: port, path: "/api/\(action)?\(form)", headers: headers)
    }
    if json {
        headers.append(("Content-Type", "application/json"))
        let body = String(decoding: try JSONSerialization.data(withJSONObject: fields.mapValues { Int($0).map { $0 as Any } ?? $0 }), as: UTF8.self)
        return try await ChatHTTP.request(method, port: port, path: "/api/\(action)", headers: headers, body: body)
    }
    headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    return try await ChatHTTP.request(method, port: port, path: "/api/\(action)", headers: headers, body: form)
}

private func object(_ result: HTTPResult) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(result.body.utf8))) as? [String: Any] ?? [:]
}

/// Two instances on one Redis, or one memory broker serving as both.
private func withInstances(
    _ broker: ChatConfiguration.BrokerKind, logs: LogCapture? = nil, _ configure: @escaping (inout ChatConfiguration) -> Void = { _ in },
    _ body: (TestServer, TestServer) async throws -> Void
) async throws {
    let setUp: (inout ChatConfiguration) -> Void = { configuration in
        configuration.adminToken = adminToken
        configure(&configuration)
    }
    let a = try await TestServer.start(broker: broker, logs: logs, setUp)
    let b = broker == .redis ? try await TestServer.start(broker: broker, setUp) : a
    do {
        try await body(a, b)
    } catch {
        await a.stop()
        if b !== a { await b.stop() }
        throw error
    }
    await a.stop()
    if b !== a { await b.stop() }
}

/// Waits until `condition` holds, checking every 50 ms, for at most `within`.
private func eventually(within: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + within
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

extension V2Client {
    /// Sends a moderator's frame and waits for its `moderated` or `nack`.
    func moderate(_ frame: [String: Any]) async throws -> [String: Any]? {
        try await send(frame)
        while let answer = await next() {
            if ["moderated", "nack"].contains(answer.type), answer["id"] as? String == frame["id"] as? String { return answer }
        }
        return nil
    }
}

@Suite("Moderation: delete, mute, ban and slow mode, on every instance")
struct ModerationTests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    @Test func aMuteOnOneInstanceRefusesSendsOnAnotherTellsTheirSocketsAndOutlivesARestart() async throws {
        let logs = LogCapture()
        try await withInstances(.redis, logs: logs) { a, b in
            let channel = uniqueChannel("mod")
            let (ada, bob) = (Person(), Person())
            let adas = try await V2Client.connect(b, person: ada)
            let bobs = try await V2Client.connect(b, person: bob)
            for client in [adas, bobs] { _ = try await client.subscribedFrame(channel) }
            #expect(try await adas.ask(["type": "send", "id": "before", "channel": channel, "data": "hi"])?.type == "ack")

            let muted = try await api(a.port, "mute", ["channel": channel, "user": ada.id, "seconds": "600"])
            #expect(muted.status == 200, "\(muted.body)")
            let answer = object(muted)
            #expect(answer["ok"] as? Bool == true && answer["action"] as? String == "mute" && answer["user"] as? String == ada.id)
            let until = try #require(answer.int("until"))
            #expect(until > Int64(Date().timeIntervalSince1970 * 1000) + 590_000)

            let told = try #require(await adas.next("muted"))
            #expect(told.channel == channel && told.int("until") == until)
            #expect(await bobs.next("muted", timeout: .milliseconds(300)) == nil, "only the muted person is told")

            let refused = try #require(try await adas.ask(["type": "send", "id": "during", "channel": channel, "data": "still here?"]))
            #expect(refused.type == "nack" && refused.int("status") == 403)
            let words = refused["message"] as? String ?? ""
            #expect(words.hasPrefix("You are muted in this room for ") && words.hasSuffix(" more seconds."), "\(words)")
            let posted = try await ChatHTTP.send(port: b.port, data: "by POST", channel: channel, headers: [ada.header])
            #expect(posted.status == 403 && posted.body.hasPrefix("You are muted in this room for "))
            #expect(try await bobs.ask(["type": "send", "id": "bob", "channel": channel, "data": "I may"])?.type == "ack")
            #expect(!logs.lines(containing: "Moderation").filter { $0.contains("by=admin") && $0.contains("action=mute") && $0.contains("user=\(ada.id)") && $0.contains("seconds=600") }.isEmpty)
            #expect(logs.lines(containing: "Moderation").allSatisfy { $0.hasPrefix("notice") })
            let metrics = try await ChatHTTP.request("GET", port: a.port, path: "/metrics")
            #expect(metrics.body.contains(#"chatroom_moderation_actions_total{action="mute"} 1"#))
            let refusals = try await ChatHTTP.request("GET", port: b.port, path: "/metrics").body.split(separator: "\n")
            #expect(refusals.contains { $0.hasPrefix("chatroom_refusals_total") && $0.contains(#"reason="muted""#) && $0.contains(#"route="/send/""#) })
            #expect(refusals.contains { $0.hasPrefix("chatroom_refusals_total") && $0.contains(#"reason="muted""#) && $0.contains(#"route="socket""#) })

            // A new instance (a restart) knows the mute: it is in Redis. A reconnecting socket is told again.
            for client in [adas, bobs] { await client.disconnect() }
            let c = try await TestServer.start(broker: .redis) { $0.adminToken = adminToken }
            #expect(try await ChatHTTP.send(port: c.port, data: "after a restart", channel: channel, headers: [ada.header]).status == 403)
            let again = try await V2Client.connect(c, person: ada)
            _ = try await again.subscribedFrame(channel)
            #expect((await again.next("muted"))?.channel == channel)

            // Lifted (0 seconds): everyone may send again, and the person is told.
            #expect(try await api(a.port, "mute", ["channel": channel, "user": ada.id, "seconds": "0"]).status == 200)
            #expect((await again.next("muted"))?.int("until") == 0)
            #expect(try await again.ask(["type": "send", "id": "after", "channel": channel, "data": "back"])?.type == "ack")
            await again.disconnect()
            await c.stop()
        }
    }

    @Test(arguments: brokers)
    func aBanClosesChatV1RefusesChatV2SendsAndHistoryUntilItIsLifted(broker: ChatConfiguration.BrokerKind) async throws {
        try await withInstances(broker) { a, b in
            let (channel, other) = (uniqueChannel("ban"), uniqueChannel("free"))
            let ada = Person()
            let v1 = try await ChatWebSocket.connect(port: b.port, path: "/wb/?channel=\(channel)", headers: [ada.header], subprotocols: ["chat.v1"])
            let v2 = try await V2Client.connect(b, person: ada)
            _ = try await v2.subscribedFrame(channel)
            _ = try await v2.subscribedFrame(other)

            let banned = try await api(a.port, "ban", ["channel": channel, "user": ada.id, "seconds": "0"], json: true)
            #expect(banned.status == 200 && object(banned).int("until") == 0, "\(banned.body)")
            #expect(await closeCode(of: v1) == 4403)
            let refused = try #require(await v2.next("refused"))
            #expect(refused.channel == channel && refused.int("code") == 4403 && refused["message"] as? String == "You are banned from this room.")
            #expect(refused["reason"] as? String == "banned", "a client tells refusals apart by their reason")
            #expect(try await v2.ask(["type": "send", "id": "elsewhere", "channel": other, "data": "still open"])?.type == "ack", "the socket stays open for its other rooms")

            // Everything new is refused too, on every instance.
            try await v2.subscribe(channel)
            #expect((await v2.next("refused"))?.int("code") == 4403)
            let rejoined = try await ChatWebSocket.connect(port: a.port, path: "/wb/?channel=\(channel)", headers: [ada.header], subprotocols: ["chat.v1"])
            #expect(await closeCode(of: rejoined) == 4403)
            let posted = try await ChatHTTP.send(port: a.port, data: "let me in", channel: channel, headers: [ada.header])
            #expect(posted.status == 403 && posted.body == "You are banned from this room.\n")
            #expect(try await v2.ask(["type": "send", "id": "banned", "channel": channel, "data": "x"])?.int("status") == 403)
            let read = try await ChatHTTP.request("GET", port: b.port, path: "/history?channel=\(channel)", headers: [ada.header])
            #expect(read.status == 403 && read.body.contains("You are banned from this room."))
            #expect(try await ChatHTTP.request("GET", port: b.port, path: "/metrics").body.contains(#"reason="banned""#))
            #expect(try await ChatHTTP.request("GET", port: b.port, path: "/history?channel=\(channel)").status == 200, "others still read it")

            if broker == .redis {
                // The channel idles out (its history keys expire): the ban is no part of them.
                let redis = try await connectToRedis()
                let name = ChannelName(channel)!
                _ = try await redis.send(RedisCommand("DEL", .string(RedisKeys.meta(name)), .string(RedisKeys.history(name))))
                redis.close()
                #expect(try await ChatHTTP.send(port: a.port, data: "a new epoch", channel: channel, headers: [ada.header]).status == 403)
                // A restarted instance knows the ban.
                let c = try await TestServer.start(broker: .redis)
                let fresh = try await V2Client.connect(c, person: ada)
                try await fresh.subscribe(channel)
                #expect((await fresh.next("refused"))?.int("code") == 4403)
                await fresh.disconnect()
                await c.stop()
            }

            let lifted = try await api(a.port, "ban", ["channel": channel, "user": ada.id], method: "DELETE")
            #expect(lifted.status == 200 && object(lifted)["action"] as? String == "unban", "\(lifted.body)")
            #expect(try await ChatHTTP.send(port: b.port, data: "thanks", channel: channel, headers: [ada.header]).status == 200)
            #expect(try await eventually { try await ChatHTTP.request("GET", port: b.port, path: "/history?channel=\(channel)", headers: [ada.header]).status == 200 })
            #expect(try await v2.subscribedFrame(channel)?.channel == channel)
            // A ban for some time says until when, live and to a new subscription.
            let timed = try await api(a.port, "ban", ["channel": channel, "user": ada.id, "seconds": "600"])
            let until = object(timed).int("until") ?? 0
            #expect(timed.status == 200 && until > 0)
            #expect(await v2.next("refused")?.int("until") == until)
            try await v2.subscribe(channel)
            #expect(try await eventually {
                guard let again = await v2.next("refused", timeout: .milliseconds(300)) else {
                    try await v2.subscribe(channel)
                    return false
                }
                return again.int("until") == until
            })
            _ = try await api(a.port, "ban", ["channel": channel, "user": ada.id], method: "DELETE")
            await v2.disconnect()
        }
    }

    @Test(arguments: brokers)
    func slowModeAnswers429WithRetryAfterAndModeratorsAreExempt(broker: ChatConfiguration.BrokerKind) async throws {
        let moderator = Person()
        try await withInstances(broker, { $0.moderators = [moderator.id] }) { a, b in
            let channel = uniqueChannel("slow")
            let ada = Person()
            let adas = try await V2Client.connect(b, person: ada)
            let mods = try await V2Client.connect(b, person: moderator)
            for client in [adas, mods] { _ = try await client.subscribedFrame(channel) }
            let slowed = try await api(a.port, "slowmode", ["channel": channel, "seconds": "30"])
            #expect(slowed.status == 200 && object(slowed).int("seconds") == 30, "\(slowed.body)")

            #expect(try await adas.ask(["type": "send", "id": "one", "channel": channel, "data": "first"])?.type == "ack")
            let second = try #require(try await adas.ask(["type": "send", "id": "two", "channel": channel, "data": "second"]))
            #expect(second.type == "nack" && second.int("status") == 429 && second["reason"] as? String == "slow_mode")
            let wait = try #require(second.int("retryAfter"))
            #expect((1...30).contains(wait))
            #expect((second["message"] as? String)?.contains("slow mode") == true)
            let posted = try await ChatHTTP.send(port: a.port, data: "by POST", channel: channel, headers: [ada.header])
            #expect(posted.status == 429 && Int(posted.header("Retry-After") ?? "") != nil)
            let refusals = try await ChatHTTP.request("GET", port: a.port, path: "/metrics").body
            #expect(refusals.contains(#"reason="slow_mode""#))

            for id in ["m1", "m2", "m3"] {
                #expect(try await mods.ask(["type": "send", "id": id, "channel": channel, "data": id])?.type == "ack", "moderators are exempt")
            }
            // Over the socket, a moderator turns it off.
            let off = try #require(try await mods.moderate(["type": "slowmode", "id": "off", "channel": channel, "seconds": 0]))
            #expect(off.type == "moderated" && off["action"] as? String == "slowmode" && off.int("seconds") == 0)
            #expect(try await adas.ask(["type": "send", "id": "three", "channel": channel, "data": "free again"])?.type == "ack")
            await adas.disconnect()
            await mods.disconnect()
        }
    }

    @Test(arguments: brokers)
    func aLongerSlowModeHoldsPostsMadeUnderTheShorterOneAndOffMakesNoKey(broker: ChatConfiguration.BrokerKind) async throws {
        try await withInstances(broker) { a, _ in
            let channel = uniqueChannel("raise")
            let ada = Person()
            // The post's record lasts the shorter mode's seconds unless the longer mode
            // comes within them. In the full suite on a loaded machine 3 s were sometimes
            // not enough for the next request (the record had expired when the longer mode
            // came: Redis then held the room's 3600 and no record): 8 s are.
            #expect(try await api(a.port, "slowmode", ["channel": channel, "seconds": "8"]).status == 200)
            #expect(try await ChatHTTP.send(port: a.port, data: "first", channel: channel, headers: [ada.header]).status == 200)
            #expect(try await api(a.port, "slowmode", ["channel": channel, "seconds": "3600"]).status == 200)
            try await Task.sleep(for: .milliseconds(8500))
            let again = try await ChatHTTP.send(port: a.port, data: "again", channel: channel, headers: [ada.header])
            var state = ""
            if broker == .redis, again.status != 429 {
                let redis = try await connectToRedis()
                let name = ChannelName(channel)!
                let ttl = try await redis.send(RedisCommand("PTTL", .string(RedisKeys.lastPosts(name))))
                let posts = try await redis.send(RedisCommand("HGETALL", .string(RedisKeys.lastPosts(name))))
                let room = try await redis.send(RedisCommand("HGETALL", .string(RedisKeys.moderation(name))))
                redis.close()
                state = "last posts \(posts) ttl \(ttl), room \(room)"
            }
            #expect(again.status == 429, "the post made under 8 s counts under 3600 s: \(again.body) \(state)")
            if broker == .redis {
                // Turning it off where nobody moderated keeps nothing.
                let untouched = uniqueChannel("never")
                #expect(try await api(a.port, "slowmode", ["channel": untouched, "seconds": "0"]).status == 200)
                let redis = try await connectToRedis()
                let exists = try await redis.send(RedisCommand("EXISTS", .string(RedisKeys.moderation(ChannelName(untouched)!))))
                redis.close()
                #expect(exists.integer == 0)
            }
        }
    }

    @Test(arguments: brokers)
    func aRoomHoldsAtMostAThousandMutesAndBans(broker: ChatConfiguration.BrokerKind) async throws {
        // Many requests at once from one address: its connection limit is lifted.
        try await withInstances(broker, { $0.maximumConnectionsPerAddress = 10_000 }) { a, _ in
            let channel = uniqueChannel("full")
            let people = (0..<RoomModeration.maximumEntries).map { _ in Person().id }
            for batch in stride(from: 0, to: people.count, by: 20) {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for user in people[batch..<min(batch + 20, people.count)] {
                        group.addTask { try await api(a.port, "ban", ["channel": channel, "user": user, "seconds": "600"]).status }
                    }
                    for try await status in group { #expect(status == 200) }
                }
            }
            let one = try await api(a.port, "mute", ["channel": channel, "user": Person().id, "seconds": "60"])
            #expect(one.status == 409 && one.body.contains("as many mutes and bans as it may"), "\(one.body)")
            // One already there may be changed, and lifting one makes room.
            #expect(try await api(a.port, "ban", ["channel": channel, "user": people[0], "seconds": "0"]).status == 200)
            #expect(try await api(a.port, "ban", ["channel": channel, "user": people[1]], method: "DELETE").status == 200)
            #expect(try await api(a.port, "mute", ["channel": channel, "user": Person().id, "seconds": "60"]).status == 200)
        }
    }

    @Test func slowModeAtStartIsSetOnlyWhereNoModeratorSetOne() async throws {
        let (slowed, changed) = (uniqueChannel("start"), uniqueChannel("changed"))
        let ada = Person()
        let configure: (inout ChatConfiguration) -> Void = { configuration in
            configuration.adminToken = adminToken
            configuration.slowModes = [ChannelName(slowed)!: 60, ChannelName(changed)!: 60]
        }
        let first = try await TestServer.start(broker: .redis, configure)
        #expect(try await api(first.port, "slowmode", ["channel": changed, "seconds": "0"]).status == 200)
        await first.stop()
        let second = try await TestServer.start(broker: .redis, configure)
        for channel in [slowed, changed] {
            #expect(try await ChatHTTP.send(port: second.port, data: "one", channel: channel, headers: [ada.header]).status == 200)
        }
        #expect(try await ChatHTTP.send(port: second.port, data: "two", channel: slowed, headers: [ada.header]).status == 429)
        #expect(try await ChatHTTP.send(port: second.port, data: "two", channel: changed, headers: [ada.header]).status == 200, "the moderator's 0 outlived the restart")
        await second.stop()
    }

    @Test(arguments: brokers)
    func moderatorsDeleteAnyonesMessageOverTheAPIAndTheSocket(broker: ChatConfiguration.BrokerKind) async throws {
        let moderator = Person()
        try await withInstances(broker, { $0.moderators = [moderator.id] }) { a, b in
            let channel = uniqueChannel("del")
            let (ada, bob) = (Person(), Person())
            let adas = try await V2Client.connect(a, person: ada)
            let bobs = try await V2Client.connect(b, person: bob)
            let mods = try await V2Client.connect(b, person: moderator)
            for client in [adas, bobs, mods] { _ = try await client.subscribedFrame(channel) }
            let sent = try #require(try await adas.ask(["type": "send", "id": "spam", "channel": channel, "data": "buy cheap stuff"]))
            let of = try #require(sent.int("offset"))

            let deleted = try await api(a.port, "delete", ["channel": channel, "offset": String(of)], json: true)
            #expect(deleted.status == 200, "\(deleted.body)")
            #expect(object(deleted).int("of") == of)
            let delete = try #require(await bobs.next("delete"))
            #expect(delete.int("of") == of && delete.int("offset") == object(deleted).int("offset"))
            let kept = try await history(b.port, channel)
            #expect(kept.first?["deleted"] as? Bool == true && kept.first?["data"] == nil, "the text is gone")
            #expect(try await api(a.port, "delete", ["channel": channel, "offset": String(of)]).status == 403, "deleted already")
            #expect(try await api(a.port, "delete", ["channel": channel, "offset": "999"]).status == 404)

            // Over chat.v2: a moderator's delete of someone else's message; nobody else's.
            let bobsWords = try #require(try await bobs.ask(["type": "send", "id": "b1", "channel": channel, "data": "rude"])?.int("offset"))
            #expect(try await adas.ask(["type": "delete", "id": "x", "channel": channel, "of": bobsWords])?.int("status") == 403)
            #expect(try await mods.ask(["type": "delete", "id": "d1", "channel": channel, "of": bobsWords])?.type == "ack")
            #expect((await adas.next("delete"))?.int("of") != nil)

            // A person who is no moderator may not moderate.
            let refused = try #require(try await bobs.moderate(["type": "mute", "id": "m", "channel": channel, "user": ada.id, "seconds": 60]))
            #expect(refused.type == "nack" && refused.int("status") == 403)
            let muted = try #require(try await mods.moderate(["type": "mute", "id": "m2", "channel": channel, "user": ada.id, "seconds": 60]))
            #expect(muted.type == "moderated" && muted["user"] as? String == ada.id && muted.int("until") ?? 0 > 0)
            #expect((await adas.next("muted"))?.channel == channel)
            let badUser = try #require(try await mods.moderate(["type": "ban", "id": "b", "channel": channel, "user": "nobody", "seconds": 60]))
            #expect(badUser.type == "nack" && badUser.int("status") == 400)
            for client in [adas, bobs, mods] { await client.disconnect() }
        }
    }

    @Test func aStormOfJoinsReadsARoomsModerationOnceAndSignalsChangeTheCopy() async throws {
        let memory = MemoryBroker { _ in }
        let broker = SlowReadStates(memory)
        let moderations = RoomModerations()
        let channel = ChannelName(uniqueChannel())!
        _ = try await memory.moderate(.ban("eve", seconds: 0), in: channel)
        let banned = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 {
                group.addTask { try await moderations.room(of: channel, from: broker).isBanned("eve", now: RoomModeration.now) }
            }
            return try await group.reduce(true) { $0 && $1 }
        }
        #expect(banned)
        #expect(broker.moderationReads.withLockedValue { $0 } == 1, "a thousand joins, one read")
        moderations.observe([.moderation(channel: channel, change: .unbanned("eve"))])
        #expect(moderations.kept(channel)?.isBanned("eve", now: RoomModeration.now) == false, "the signal changed the copy")
        #expect(broker.moderationReads.withLockedValue { $0 } == 1)
        #expect(moderations.kept(channel, now: .now + .seconds(2)) == nil, "after a second it is read again")
    }

    @Test func theAPIRefusesWithoutTheRightTokenAndSaysHowToTurnItOn() async throws {
        try await withServer(broker: .memory) { server in
            let off = try await api(server.port, "mute", ["channel": "c", "user": Person().id, "seconds": "5"])
            #expect(off.status == 404 && off.body.contains("--admin-token"))
        }
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, { $0.adminToken = adminToken }) { server in
            let user = Person().id
            let none = try await api(server.port, "mute", ["channel": "c", "user": user, "seconds": "5"], token: nil)
            #expect(none.status == 401 && none.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            let wrong = try await api(server.port, "ban", ["channel": "c", "user": user, "seconds": "5"], token: "not-the-token")
            #expect(wrong.status == 401)
            #expect(!logs.lines(containing: "Refused a moderation request").filter { $0.contains("refusal=unauthorized") && $0.contains("route=/api/mute") }.isEmpty)
            #expect(try await api(server.port, "mute", ["channel": "c", "user": "not an id", "seconds": "5"]).status == 400)
            #expect(try await api(server.port, "mute", ["channel": "c", "user": user, "seconds": "31536001"]).status == 400)
            #expect(try await api(server.port, "mute", ["channel": "c", "user": user]).status == 400)
            #expect(try await api(server.port, "slowmode", ["channel": "c", "seconds": "-1"]).status == 400)
            #expect(try await api(server.port, "ban", ["channel": "no spaces", "user": user, "seconds": "5"]).status == 400)
            #expect(try await api(server.port, "delete", ["channel": "c", "offset": "zero"]).status == 400)
            // JSON's true is no number of seconds (it once read as 1), nor is 1.5.
            for seconds in ["true", "false", "1.5", "1e300"] {
                let body = #"{"channel":"c","user":"\#(user)","seconds":\#(seconds)}"#
                let answer = try await ChatHTTP.request(
                    "POST", port: server.port, path: "/api/mute",
                    headers: [("Authorization", "Bearer \(adminToken)"), ("Content-Type", "application/json")], body: body
                )
                #expect(answer.status == 400 && answer.body.contains("must be a string or a whole number"), "\(seconds)")
            }
            let whole = try await ChatHTTP.request(
                "POST", port: server.port, path: "/api/mute", headers: [("Authorization", "Bearer \(adminToken)"), ("Content-Type", "application/json")],
                body: #"{"channel":"c","user":"\#(user)","seconds":5.0}"#
            )
            #expect(whole.status == 200, "5.0 is a whole number")
            let metrics = try await ChatHTTP.request("GET", port: server.port, path: "/metrics")
            #expect(metrics.body.contains(#"chatroom_refusals_total{reason="unauthorized",route="/api/mute"}"#) || metrics.body.contains(#"route="/api/mute""#))
        }
    }
    @Test func aModeratorsSignInModeratesOverTheSocketAndTheAPIWithinItsRooms() async throws {
        try await withInstances(.redis, { $0.jwtSecret = Minter.secret }) { a, b in
            let (desk, other) = (uniqueChannel("desk"), uniqueChannel("other"))
            let moderatorToken = Minter.hs256(Minter.claims("mod-1", name: "Mo", ["role": "moderator", "channels": [desk]]))
            let spammer = Person()
            let moderator = try await V2Client.connect(a, query: "token=\(moderatorToken)")
            #expect(await moderator.next("welcome")?["moderator"] as? Bool == true)
            let spammers = try await V2Client.connect(b, person: spammer)
            _ = try await spammers.subscribedFrame(desk)
            _ = try await moderator.subscribedFrame(desk)
            let muted = try await moderator.moderate(["type": "mute", "id": "m1", "channel": desk, "user": spammer.id, "seconds": 60])
            #expect(muted?.type == "moderated", "\(muted ?? [:])")
            // Told, and their typing is not relayed: it would announce words that cannot come.
            #expect(await spammers.next("muted")?.channel == desk)
            try await spammers.send(["type": "typing", "channel": desk])
            #expect(await moderator.next("typing", timeout: .milliseconds(600)) == nil)
            let outside = try await moderator.moderate(["type": "mute", "id": "m2", "channel": other, "user": spammer.id, "seconds": 60])
            #expect(outside?.type == "nack" && outside?.int("status") == 403, "a moderator of some rooms moderates those")
            // On the other instance, the spammer's send is refused.
            let sent = try await ChatHTTP.send(port: b.port, data: "buy now", channel: desk, headers: [spammer.header])
            #expect(sent.status == 403 && sent.body.hasPrefix("You are muted in this room"))
            // The API takes a moderator's sign-in token as Bearer; a person who is none gets 401.
            let banned = try await api(b.port, "ban", ["channel": desk, "user": spammer.id, "seconds": "0"], token: moderatorToken)
            #expect(banned.status == 200, "\(banned.body)")
            #expect(try await api(b.port, "ban", ["channel": other, "user": spammer.id, "seconds": "0"], token: moderatorToken).status == 403)
            // A signed-in person may be named by the site's own id for them.
            let bySub = try await api(b.port, "mute", ["channel": desk, "sub": "signed-in-spammer", "seconds": "60"], token: moderatorToken)
            #expect(object(bySub)["user"] as? String == SignInTests.identity(ofSubject: "signed-in-spammer"), "\(bySub.body)")
            let plain = Minter.hs256(Minter.claims("someone"))
            let notModerator = try await api(b.port, "mute", ["channel": desk, "user": spammer.id, "seconds": "5"], token: plain)
            #expect(notModerator.status == 403 && notModerator.body.contains("not a moderator's"), "\(notModerator.body)")
            let expired = Minter.hs256(Minter.claims("mod-1", ["role": "moderator", "exp": Int(Date().timeIntervalSince1970) - 120]))
            let late = try await api(b.port, "mute", ["channel": desk, "user": spammer.id, "seconds": "5"], token: expired)
            #expect(late.status == 401 && late.body.hasPrefix("Token expired"), "\(late.body)")
            #expect(try await api(b.port, "mute", ["channel": desk, "sub": "", "seconds": "5"], token: moderatorToken).status == 400)
            // Someone who is not a moderator over the socket is refused.
            let person = try await V2Client.connect(a, query: "token=\(plain)")
            #expect(try await person.moderate(["type": "mute", "id": "m3", "channel": desk, "user": spammer.id, "seconds": 60])?.int("status") == 403)
            await moderator.disconnect()
            await person.disconnect()
            await spammers.disconnect()
        }
    }
}

