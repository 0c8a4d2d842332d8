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

/// A urlencoded POST to `path`, from `person` (their cookie) with `headers` besides.
private func post(
    _ port: Int, _ path: String, _ fields: [String: String], as person: Person? = nil, headers: [(String, String)] = []
) async throws -> HTTPResult {
    let body = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\(ChatHTTP.formEncode($0.value))" }.joined(separator: "&")
    return try await ChatHTTP.request(
        "POST", port: port, path: path, headers: (person.map { [$0.header] } ?? []) + [("Content-Type", "application/x-www-form-urlencoded")] + headers,
        body: body
    )
}

/// What a page without a socket does over HTTP (compatibility mode): typing, read states,
/// edits, deletes, reactions and a moderator's actions, each with the rules of its chat.v2 frame.
@Suite("Compatibility mode: typing, read states, changes and moderation over HTTP")
struct CompatibilityActionsTests {
    static let brokers: [ChatConfiguration.BrokerKind] = [.memory, .redis]

    @Test(arguments: brokers)
    func typingOverHTTPReachesTheRoomOncePerTwoSecondsAndOnlyFromSomeoneWhoMayBeThere(broker: ChatConfiguration.BrokerKind) async throws {
        let admin = "activity-admin-token-0123456789"
        try await withServer(broker: broker, { $0.adminToken = admin }) { server in
            let room = uniqueChannel("typing")
            let (ada, bob) = (Person(), Person())
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [bob.header])
            _ = await stream.next(named: ["subscribed"])
            let typed = try await post(server.port, "/typing/", ["channel": room, "name": "Ada"], as: ada)
            #expect(typed.status == 204, "\(typed.body)")
            let typing = object(await stream.next(named: ["typing"]))
            let member = typing["member"] as? [String: Any]
            #expect(typing.channel == room && member?["id"] as? String == ada.id && member?["name"] as? String == "Ada")
            // Once per 2 s per person and room; the route without its slash is the same.
            let again = try await post(server.port, "/typing", ["channel": room], as: ada)
            #expect(again.status == 429 && again.header("Retry-After") == "2" && again.body.contains("at most once every 2 s"), "\(again.body)")
            // Nobody to show, a bad room, a room that is not hers.
            let nobody = try await post(server.port, "/typing/", ["channel": room])
            #expect(nobody.status == 403 && nobody.body.contains("needs an identity"), "\(nobody.body)")
            #expect(try await post(server.port, "/typing/", ["channel": "bad name!"], as: ada).status == 400)
            #expect(try await post(server.port, "/typing/", [:], as: ada).body.contains("Missing channel"))
            let other = Person()
            let private_ = try await post(server.port, "/typing/", ["channel": "dm:\([bob.id, other.id].sorted().joined(separator: ":"))"], as: ada)
            #expect(private_.status == 403, "\(private_.body)")
            // Muted: her typing would announce words that cannot come. Banned: not in the room at all.
            let carol = Person()
            let mute = try await post(server.port, "/api/mute", ["channel": room, "user": carol.id, "seconds": "60"], headers: [("Authorization", "Bearer \(admin)")])
            #expect(mute.status == 200, "\(mute.body)")
            let muted = try await post(server.port, "/typing/", ["channel": room], as: carol)
            #expect(muted.status == 403 && muted.body.contains("You are muted"), "\(muted.body)")
            let dave = Person()
            _ = try await post(server.port, "/api/ban", ["channel": room, "user": dave.id, "seconds": "60"], headers: [("Authorization", "Bearer \(admin)")])
            let banned = try await post(server.port, "/typing/", ["channel": room], as: dave)
            #expect(banned.status == 403 && banned.body == RoomModeration.bannedWords + "\n", "\(banned.body)")
            stream.close()
        }
    }

    @Test(arguments: brokers)
    func aReadStateOverHTTPIsKeptAndToldToThePersonsOtherStreams(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let room = uniqueChannel("read")
            let ada = Person()
            for text in ["one", "two"] { #expect(try await ChatHTTP.send(port: server.port, data: text, channel: room).status == 200) }
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [ada.header])
            #expect(object(await stream.next(named: ["subscribed"])).int("read") == 0)
            let read = try await post(server.port, "/read/", ["channel": room, "offset": "2"], as: ada)
            #expect(read.status == 204, "\(read.body)")
            let told = object(await stream.next(named: ["read"]))
            #expect(told.channel == room && told.int("offset") == 2)
            // Kept: the next subscription starts from it.
            stream.close()
            let later = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [ada.header])
            #expect(object(await later.next(named: ["subscribed"])).int("read") == 2)
            later.close()
            let bad = try await post(server.port, "/read/", ["channel": room, "offset": "-1"], as: ada)
            #expect(bad.status == 400 && bad.body.contains("offset must be a whole number"), "\(bad.body)")
            #expect(try await post(server.port, "/read/", ["channel": room, "offset": "1"]).status == 403, "nobody's read state")
            // Two a second per person and room (five at once): twelve at once are too many.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for offset in 3...14 { group.addTask { try await post(server.port, "/read/", ["channel": room, "offset": String(offset)], as: ada).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.contains(429) && statuses.allSatisfy { $0 == 204 || $0 == 429 }, "\(statuses)")
        }
    }

    @Test(arguments: brokers)
    func editsDeletesAndReactionsGoThroughSendWithTheRulesOfTheirFrames(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let room = uniqueChannel("change")
            let (ada, bob) = (Person(), Person())
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [bob.header])
            _ = await stream.next(named: ["subscribed"])
            let sent = try await post(server.port, "/send/", ["channel": room, "data": "helo"], as: ada)
            #expect(sent.status == 200)
            let of = try #require(sent.header("Chat-Offset"))
            _ = await stream.next(named: ["message"])
            // Her edit, answered as a message is, with the change's own offset.
            let edit = try await post(server.port, "/send/", ["channel": room, "type": "edit", "of": of, "data": "hello"], as: ada, headers: [("Idempotency-Key", "edit-1")])
            #expect(edit.status == 200 && edit.body == "ok" && edit.header("Chat-Offset") == "2", "\(edit.body)")
            let edited = object(await stream.next(named: ["edit"]))
            #expect(edited.data == "hello" && edited.int("of") == Int64(of))
            let repeated = try await post(server.port, "/send/", ["channel": room, "type": "edit", "of": of, "data": "hello"], as: ada, headers: [("Idempotency-Key", "edit-1")])
            #expect(repeated.status == 200 && repeated.header("Chat-Offset") == "2", "a repeat is answered with the first")
            // Not his to edit; nobody's without an identity.
            let bobs = try await post(server.port, "/send/", ["channel": room, "type": "edit", "of": of, "data": "mine now"], as: bob)
            #expect(bobs.status == 403 && bobs.body.contains("Only its author may edit"), "\(bobs.body)")
            let anonymous = try await post(server.port, "/send/", ["channel": room, "type": "delete", "of": of])
            #expect(anonymous.status == 403, "\(anonymous.body)")
            // A reaction toggles, and needs an identity.
            for _ in 0..<2 {
                let react = try await post(server.port, "/send/", ["channel": room, "type": "react", "of": of, "emoji": "👍"], as: bob)
                #expect(react.status == 200, "\(react.body)")
                let reacted = object(await stream.next(named: ["react"]))
                #expect(reacted.int("of") == Int64(of))
            }
            let faceless = try await post(server.port, "/send/", ["channel": room, "type": "react", "of": of, "emoji": "👍"])
            #expect(faceless.status == 403 && faceless.body.contains("Reacting needs an identity"), "\(faceless.body)")
            let twoEmoji = try await post(server.port, "/send/", ["channel": room, "type": "react", "of": of, "emoji": "👍👍"], as: bob)
            #expect(twoEmoji.status == 400 && twoEmoji.body.contains("one emoji"), "\(twoEmoji.body)")
            // Asked badly.
            let unknown = try await post(server.port, "/send/", ["channel": room, "type": "shout", "of": of, "data": "x"], as: ada)
            #expect(unknown.status == 400 && unknown.body.contains("edit, delete or react"), "\(unknown.body)")
            for bad in ["", "0", "-1", "x", "99999999999999999"] {
                let refused = try await post(server.port, "/send/", ["channel": room, "type": "delete", "of": bad], as: ada)
                #expect(refused.status == 400 && refused.body.contains("\"of\" must be the offset of a message"), "\(bad): \(refused.body)")
            }
            // Her delete.
            let delete = try await post(server.port, "/send/", ["channel": room, "type": "delete", "of": of], as: ada)
            #expect(delete.status == 200, "\(delete.body)")
            #expect(object(await stream.next(named: ["delete"])).int("of") == Int64(of))
            stream.close()
        }
    }

    @Test func theChatsOwnPagesAreTheRequestsHostWhateverThePortOrAnAllowedOrigin() {
        func own(_ origin: String?, _ authority: String?, allowed: Set<String>? = nil) -> Bool {
            ModeratorAuthorizer.isOwnPage(origin: origin, authority: authority, allowedOrigins: allowed)
        }
        #expect(own(nil, "chat.example"), "no Origin: not a browser's cross-origin request")
        #expect(own("https://chat.example", "chat.example"))
        #expect(own("https://Chat.Example:8443", "chat.example:8080"), "a proxy's Host often lacks the public port")
        #expect(own("http://[::1]:9000", "[::1]:8080"))
        #expect(own("https://app.example", "chat.example", allowed: ["https://app.example"]))
        #expect(!own("http://chat.example", "chat.example", allowed: ["https://chat.example"]), "with --allowed-origins, only they")
        #expect(!own("https://evil.example", "chat.example"))
        #expect(!own("https://chat.example.evil", "chat.example"))
        #expect(!own("null", "chat.example"), "an opaque origin")
        #expect(!own("javascript://chat.example", "chat.example"), "http and https only")
        #expect(!own("http://[", "["))
        #expect(!own("https://", ""))
        #expect(!own("https://chat.example", nil))
        #expect(!own("https://chat.example:x", "chat.example"))
    }

    @Test func aTrustedIntegrationsTokenMakesNobodyTheAuthorOfOthersWords() async throws {
        let token = "publish-token-0123456789"
        try await withServer(broker: .memory, { $0.publishToken = token }) { server in
            let (ada, bob) = (Person(), Person())
            let sent = try await post(server.port, "/send/", ["channel": "pt", "data": "Ada's words", "token": token], as: ada)
            let of = try #require(sent.header("Chat-Offset"))
            let bobs = try await post(server.port, "/send/", ["channel": "pt", "type": "delete", "of": of, "token": token], as: bob)
            #expect(bobs.status == 403 && bobs.body.contains("Only its author may delete"), "\(bobs.body)")
            let anonymous = try await post(server.port, "/send/", ["channel": "pt", "type": "delete", "of": of], headers: [("Authorization", "Bearer \(token)")])
            #expect(anonymous.status == 403, "\(anonymous.body)")
            #expect(try await post(server.port, "/send/", ["channel": "pt", "type": "delete", "of": of, "token": token], as: ada).status == 200, "hers to delete")
        }
    }

    @Test func aFullCappedRoomShowsNobodysTypingButItsPeoples() async throws {
        try await withServer(broker: .memory, { $0.channelCaps = [ChannelName("capped")!: 1] }) { server in
            let (ada, bob) = (Person(), Person())
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=capped", headers: [ada.header])
            _ = await stream.next(named: ["subscribed"])
            let intruder = try await post(server.port, "/typing/", ["channel": "capped", "name": "intruder"], as: bob)
            #expect(intruder.status == 403 && intruder.body.contains("This room is full"), "\(intruder.body)")
            #expect(try await post(server.port, "/read/", ["channel": "capped", "offset": "0"], as: bob).status == 403)
            #expect(try await post(server.port, "/typing/", ["channel": "capped"], as: ada).status == 204, "hers: she holds the place")
            stream.close()
        }
    }

    @Test func aBodyCutShortDoesNothingAndABodyDeclaredTooLargeIsRefusedAtOnce() async throws {
        try await withServer(broker: .memory) { server in
            let ada = Person()
            let room = uniqueChannel("cut")
            for text in ["one", "two"] { _ = try await ChatHTTP.send(port: server.port, data: text, channel: room) }
            // Ten bytes short of what it declares, then the client's side ends.
            let body = "channel=\(room)&offset=2"
            let head = "POST /read/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: uid=\(ada.cookie)\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count + 10)\r\n\r\n"
            let answers = try await SendRouteTests.exchangeHalfClosing(server.port, [head + body])
            #expect(!answers.contains { $0.status == 204 }, "\(answers.map(\.status))")
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [ada.header])
            #expect(object(await stream.next(named: ["subscribed"])).int("read") == 0, "the read state did not move")
            stream.close()
            let started = ContinuousClock.now
            let huge = try await ChatHTTP.request(
                "POST", port: server.port, path: "/typing/", headers: [ada.header, ("Content-Length", "100000000")], timeout: .seconds(5)
            )
            #expect(huge.status == 413 && ContinuousClock.now - started < .seconds(3), "\(huge.status)")
        }
    }

    @Test func aSignedInPersonTypesUnderTheirSignInsNameOrNone() async throws {
        let secret = String(repeating: "s", count: 32)
        try await withServer(broker: .memory, { $0.jwtSecret = secret }) { server in
            let room = uniqueChannel("signed")
            let watcher = Person()
            let stream = try await ChatEventStream.connect(port: server.port, path: "/events?channel=\(room)", headers: [watcher.header])
            _ = await stream.next(named: ["subscribed"])
            let token = SignInToken(subject: "carol", expiry: Int64(Date().timeIntervalSince1970) + 600).signed(with: secret)
            let typed = try await post(server.port, "/typing/", ["channel": room, "name": "Alice"], headers: [("Authorization", "Bearer \(token)")])
            #expect(typed.status == 204, "\(typed.body)")
            let member = object(await stream.next(named: ["typing"]))["member"] as? [String: Any]
            #expect(member?["id"] != nil && member?["name"] == nil, "not the name the form gave: \(member ?? [:])")
            stream.close()
        }
    }

    @Test func theAddressesLimitSaysItIsTheAddresses() async throws {
        try await withServer(broker: .memory) { server in
            let room = uniqueChannel("many")
            // Twenty people of one address at once: the address allows ten at once.
            let answers = try await withThrowingTaskGroup(of: HTTPResult.self) { group in
                for _ in 0..<20 { group.addTask { try await post(server.port, "/typing/", ["channel": room], as: Person()) } }
                return try await group.reduce(into: [HTTPResult]()) { $0.append($1) }
            }
            let refused = answers.filter { $0.status == 429 }
            #expect(!refused.isEmpty && refused.allSatisfy { $0.body.contains("from your address") }, "\(answers.map(\.status))")
        }
    }

    @Test(arguments: brokers)
    func aModeratorsCookieModeratesOverHTTPFromTheChatsOwnPagesOnly(broker: ChatConfiguration.BrokerKind) async throws {
        let (mod, bob) = (Person(), Person())
        try await withServer(broker: broker, { $0.moderators = [mod.id] }) { server in
            let room = uniqueChannel("mod")
            let sent = try await post(server.port, "/send/", ["channel": room, "data": "spam"], as: bob)
            let of = try #require(sent.header("Chat-Offset"))
            let mute = try await post(server.port, "/api/mute", ["channel": room, "user": bob.id, "seconds": "60"], as: mod)
            #expect(mute.status == 200 && mute.body.contains("\"until\":"), "\(mute.body)")
            let muted = try await post(server.port, "/send/", ["channel": room, "data": "more"], as: bob)
            #expect(muted.status == 403 && muted.body.contains("You are muted"), "\(muted.body)")
            // From the chat's own page (its Origin is the server's host) it counts; from another site's, not.
            let own = try await post(server.port, "/api/mute", ["channel": room, "user": bob.id, "seconds": "0"], as: mod, headers: [("Origin", "http://127.0.0.1:\(server.port)")])
            #expect(own.status == 200, "\(own.body)")
            let elsewhere = try await post(server.port, "/api/ban", ["channel": room, "user": bob.id, "seconds": "60"], as: mod, headers: [("Origin", "https://evil.example")])
            #expect(elsewhere.status == 403 && elsewhere.body.contains("counts only on the chat's own pages"), "\(elsewhere.body)")
            // Someone else's cookie is nobody's moderator.
            let notOne = try await post(server.port, "/api/ban", ["channel": room, "user": mod.id, "seconds": "60"], as: bob)
            #expect(notOne.status == 401, "\(notOne.body)")
            // A moderator's delete removes anyone's message; from another site it is only hers to make.
            let foreign = try await post(server.port, "/send/", ["channel": room, "type": "delete", "of": of], as: mod, headers: [("Origin", "https://evil.example")])
            #expect(foreign.status == 403, "\(foreign.body)")
            let delete = try await post(server.port, "/send/", ["channel": room, "type": "delete", "of": of], as: mod)
            #expect(delete.status == 200, "\(delete.body)")
        }
        // Where only signed-in people may come, an anonymous identity moderates nothing.
        try await withServer(broker: broker, { $0.moderators = [mod.id]; $0.requireLogin = true; $0.jwtSecret = String(repeating: "j", count: 32) }) { server in
            let refused = try await post(server.port, "/api/slowmode", ["channel": uniqueChannel("login"), "seconds": "5"], as: mod)
            #expect(refused.status == 404 || refused.status == 401, "\(refused.status) \(refused.body)")
        }
    }
}
