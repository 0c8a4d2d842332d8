import Chat
import ChatClient
import ChatTestSupport
import Foundation
import Logging
import NIOPosix
import Redis
import Testing

@testable import ChatServer

/// Identities, member caps, one-to-one rooms, who is online.
@Suite("Rooms")
struct RoomsTests {
    // MARK: Identity

    @Test func thePageGivesEachBrowserASignedIdentityAndReplacesForgeries() async throws {
        try await withServer(broker: .memory) { server in
            let fresh = try await ChatHTTP.request("GET", port: server.port, path: "/")
            let issued = try #require(fresh.header("set-cookie"))
            #expect(issued.hasPrefix("uid=") && issued.contains("Max-Age=31536000") && issued.contains("SameSite=Lax"))
            let cookie = String(issued.dropFirst(4).prefix { $0 != ";" })
            #expect(Identities(secret: Person.secret).verify(cookie) != nil)

            let kept = try await ChatHTTP.request("GET", port: server.port, path: "/", headers: [("Cookie", "uid=\(cookie)")])
            #expect(kept.header("set-cookie") == nil, "a valid identity is kept")

            let id = cookie.prefix { $0 != "." }
            let forged = "\(id).\(Base64URL.encode(Array(repeating: 7, count: 32)))"
            let replaced = try await ChatHTTP.request("GET", port: server.port, path: "/", headers: [("Cookie", "uid=\(forged)")])
            let again = try #require(replaced.header("set-cookie"))
            #expect(!again.contains(String(id)), "a forged signature gets a new identity, never the claimed one")
        }
    }

    // MARK: Member caps

    @Test func aCappedRoomHoldsItsCapOfPeopleOverTwoInstances() async throws {
        let settings: (inout ChatConfiguration) -> Void = {
            $0.maximumMembers = 2
            $0.presenceGrace = .milliseconds(300)
            $0.presenceInterval = .milliseconds(100)
        }
        let a = try await TestServer.start(broker: .redis, settings)
        let b = try await TestServer.start(broker: .redis, settings)
        let channel = uniqueChannel()
        let (ada, bob, cy) = (Person(), Person(), Person())
        let adaTab = try await open(a, channel, ada)
        let bobTab = try await open(b, channel, bob)
        let adaSecondTab = try await open(b, channel, ada)
        #expect(await nextOfType("message", adaSecondTab, timeout: .milliseconds(300)) == nil, "a second tab of someone inside takes no place")
        let full = try await open(a, channel, cy)
        #expect(await closeCode(of: full) == 4409)
        let raw = await refusal { try await ChatWebSocket.connect(port: b.port, path: "/wb/?channel=\(channel)", headers: [cy.header]) }
        #expect(raw?.status == 403)
        #expect(raw?.body.contains("This room is full: it holds at most 2 people.") == true)

        // Bob leaves; once his grace period is over, his place is free.
        let left = ContinuousClock.now
        await bobTab.disconnect()
        var cyAgain: ChatWebSocket?
        while cyAgain == nil, ContinuousClock.now - left < .seconds(20) {
            let attempt = try await open(a, channel, cy)
            if await admission(of: attempt) == .admitted { cyAgain = attempt } else { await attempt.disconnect() }
        }
        #expect(cyAgain != nil, "Cy is in once Bob's place is free")
        #expect(ContinuousClock.now - left >= .milliseconds(300), "not before Bob's grace period ended")
        for socket in [adaTab, adaSecondTab] + (cyAgain.map { [$0] } ?? []) { await socket.disconnect() }
        await a.stop()
        await b.stop()
    }

    @Test func twoJoinsRacingForTheLastPlaceOnTwoInstancesAdmitExactlyOne() async throws {
        // Presence on, so that an admitted socket is told the count (see `admission(of:)`).
        let settings: (inout ChatConfiguration) -> Void = { $0.maximumMembers = 1; $0.presenceInterval = .milliseconds(200) }
        let a = try await TestServer.start(broker: .redis, settings)
        let b = try await TestServer.start(broker: .redis, settings)
        for _ in 0..<10 {
            let channel = uniqueChannel("race")
            async let first = open(a, channel, Person())
            async let second = open(b, channel, Person())
            let sockets = try await [first, second]
            async let firstAdmission = admission(of: sockets[0])
            async let secondAdmission = admission(of: sockets[1])
            let both = await [firstAdmission, secondAdmission]
            #expect(both.contains(.admitted) && both.contains(.refused(4409)), "one in, one refused: \(both)")
            for socket in sockets { await socket.disconnect() }
        }
        await a.stop()
        await b.stop()
    }

    @Test func theMemoryBrokerCapsRoomsToo() async throws {
        try await withServer(broker: .memory, { $0.channelCaps = [ChannelName("small")!: 1] }) { server in
            let inside = try await open(server, "small", Person())
            let refused = try await open(server, "small", Person())
            #expect(await closeCode(of: refused) == 4409)
            let elsewhere = try await open(server, uniqueChannel(), Person())
            #expect(await closeCode(of: elsewhere, within: .milliseconds(300)) == nil, "other rooms have no cap")
            await inside.disconnect()
            await elsewhere.disconnect()
        }
    }

    // MARK: One-to-one rooms

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func aOneToOneRoomIsOnlyForItsTwoPeopleOnEveryPath(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (ada, bob, eve) = (Person(), Person(), Person())
            let room = try #require(RoomPolicy.directRoom(ada.id, bob.id)).rawValue
            let adaSocket = try await open(server, room, ada)
            let bobSocket = try await open(server, room, bob)
            let sent = try await ChatHTTP.send(port: server.port, data: "hi Bob", channel: room, headers: [ada.header])
            #expect(sent.body == "ok")
            #expect(await nextOfType("message", bobSocket)?["data"] as? String == "hi Bob")
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(room)", headers: [bob.header]).status == 200)

            // Eve, on every path.
            let eveSocket = try await open(server, room, eve)
            #expect(await closeCode(of: eveSocket) == 4403)
            let raw = await refusal { try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(room)", headers: [eve.header]) }
            #expect(raw?.status == 403 && raw?.body.contains("private one-to-one room") == true)
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(room)", headers: [eve.header])
            #expect(history.status == 403 && !history.body.contains("hi Bob"))
            let post = try await ChatHTTP.send(port: server.port, data: "boo", channel: room, headers: [eve.header])
            #expect(post.status == 403)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(room)").status == 403, "nor anyone without an identity")
            let forged = ("Cookie", "uid=\(ada.id).\(Base64URL.encode(Array(repeating: 1, count: 32)))")
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(room)", headers: [forged]).status == 403, "nor a forged identity")

            // The name must be the canonical one: the two ids sorted.
            let backwards = "dm:" + [ada.id, bob.id].sorted().reversed().joined(separator: ":")
            let wrongOrder = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(backwards)", headers: [ada.header])
            #expect(wrongOrder.status == 403 && wrongOrder.body.contains("sorted order"))
            #expect(await nextOfType("message", bobSocket, timeout: .milliseconds(300)) == nil, "Eve's post went nowhere")
            await adaSocket.disconnect()
            await bobSocket.disconnect()
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func aOneToOneMessageIsAnnouncedInTheOtherPersonsInboxOnly(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let (ada, bob, eve) = (Person(), Person(), Person())
            let room = try #require(RoomPolicy.directRoom(ada.id, bob.id)).rawValue
            let bobInbox = try await open(server, "inbox:\(bob.id)", bob)
            let adaInbox = try await open(server, "inbox:\(ada.id)", ada)
            func post(_ text: String, as person: Person, name: String, to channel: String) async throws -> HTTPResult {
                try await ChatHTTP.send(port: server.port, data: text, channel: channel, name: name, headers: [person.header])
            }

            // Ada writes in the one-to-one room (Bob has no socket there): Bob's inbox says so.
            #expect(try await post("hi", as: ada, name: "Ada", to: room).body == "ok")
            let notice = try #require(await nextOfType("message", bobInbox))
            #expect(notice["data"] as? String == room && notice["name"] as? String == "Ada")
            #expect(await nextOfType("message", adaInbox, timeout: .milliseconds(300)) == nil, "the sender is not told of her own message")
            #expect(try await post("hello", as: bob, name: "Bob", to: room).body == "ok")
            #expect(await nextOfType("message", adaInbox)?["data"] as? String == room)

            // The inbox keeps what it was told, for a page that was closed meanwhile.
            let kept = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=inbox:\(bob.id)", headers: [bob.header])
            #expect(kept.status == 200 && kept.body.contains(#""data":"\#(room)""#))

            // Nobody else reads it, and nobody posts to it.
            #expect(await closeCode(of: try await open(server, "inbox:\(bob.id)", eve)) == 4403)
            let raw = await refusal { try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=inbox:\(bob.id)", headers: [eve.header]) }
            #expect(raw?.status == 403 && raw?.body.contains("someone else's inbox") == true)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=inbox:\(bob.id)", headers: [eve.header]).status == 403)
            for poster in [eve, bob] {
                let forged = try await post("dm:\(eve.id):\(bob.id)", as: poster, name: "Eve", to: "inbox:\(bob.id)")
                #expect(forged.status == 403 && forged.body.contains("Nobody posts to an inbox"))
            }
            #expect(await nextOfType("message", bobInbox, timeout: .milliseconds(300)) == nil, "no forged notice")
            // An inbox name that is no identity's.
            let malformed = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=inbox:nobody", headers: [bob.header])
            #expect(malformed.status == 403 && malformed.body.contains("An inbox is named inbox:<id>"), "\(malformed.body)")
            await bobInbox.disconnect()
            await adaInbox.disconnect()
        }
    }

    // MARK: Who is online

    @Test func joinAndLeaveOverInstancesWithAGracePeriodAndNoDuplicates() async throws {
        let settings: (inout ChatConfiguration) -> Void = {
            $0.presenceGrace = .seconds(1)
            $0.presenceInterval = .milliseconds(100)
        }
        let a = try await TestServer.start(broker: .redis, settings)
        let b = try await TestServer.start(broker: .redis, settings)
        let channel = uniqueChannel()
        let watcher = try await open(a, channel, Person(), name: "Watcher")
        let first = try #require(await nextOfType("members", watcher))
        #expect((first["members"] as? [[String: Any]])?.count == 1)

        let ada = Person()
        let tab1 = try await open(b, channel, ada, name: "Ada")
        let joined = try #require(await nextOfType("join", watcher))
        #expect((joined["member"] as? [String: Any])?["name"] as? String == "Ada")
        #expect((joined["member"] as? [String: Any])?["id"] as? String == ada.id)
        let tab2 = try await open(a, channel, ada, name: "Ada")
        #expect(await nextOfType("join", watcher, timeout: .milliseconds(500)) == nil, "a second tab, on another instance, is no second join")

        // Both tabs close and one comes back within the grace period: no leave, no join.
        await tab1.disconnect()
        await tab2.disconnect()
        try await Task.sleep(for: .milliseconds(300))
        let back = try await open(b, channel, ada, name: "Ada")
        #expect(await nextOfType("leave", watcher, timeout: .milliseconds(1500)) == nil)

        // Gone for good: one leave, after the grace period.
        let started = ContinuousClock.now
        await back.disconnect()
        let left = try #require(await nextOfType("leave", watcher, timeout: .seconds(4)))
        #expect((left["member"] as? [String: Any])?["id"] as? String == ada.id)
        #expect(ContinuousClock.now - started >= .milliseconds(900), "not before the grace period ends")
        #expect(await nextOfType("leave", watcher, timeout: .milliseconds(500)) == nil, "once")

        // Asked for, the list comes at once.
        try await watcher.send(text: #"{"type":"who"}"#)
        let list = try #require(await nextOfType("members", watcher))
        #expect((list["members"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["Watcher"])
        await watcher.disconnect()
        await a.stop()
        await b.stop()
    }

    @Test func theMemoryBrokerTellsJoinsAndLeavesToo() async throws {
        try await withServer(broker: .memory, {
            $0.presenceGrace = .milliseconds(300)
            $0.presenceInterval = .milliseconds(100)
        }) { server in
            let channel = uniqueChannel()
            let watcher = try await open(server, channel, Person())
            _ = await nextOfType("members", watcher)
            let guest = try await open(server, channel, Person(), name: "Guest")
            #expect((await nextOfType("join", watcher)?["member"] as? [String: Any])?["name"] as? String == "Guest")
            await guest.disconnect()
            #expect((await nextOfType("leave", watcher)?["member"] as? [String: Any])?["name"] as? String == "Guest")
            await watcher.disconnect()
        }
    }

    @Test func anInvalidNameOnTheSocketIsDroppedAndTheSocketServes() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, { $0.presenceInterval = .milliseconds(100) }) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/?channel=\(channel)&name=bad%00name%0A", headers: [Person().header], subprotocols: ["chat.v1"]
            )
            let list = try #require(await nextOfType("members", socket))
            let members = try #require(list["members"] as? [[String: Any]])
            #expect(members.count == 1 && members[0]["name"] == nil, "no name rather than a bad one")
            #expect(!logs.lines(containing: "Ignored an invalid name").isEmpty)
            _ = try await ChatHTTP.send(port: server.port, data: "still here", channel: channel)
            #expect(await nextOfType("message", socket)?["data"] as? String == "still here")
            await socket.disconnect()
        }
    }

    @Test func aCrashedInstancesPeopleLeaveWhenTheirLeasesEnd() async throws {
        try await withServer(broker: .redis, {
            $0.presenceInterval = .milliseconds(100)
            $0.presenceGrace = .zero
        }) { server in
            let channel = uniqueChannel()
            let watcher = try await open(server, channel, Person())
            _ = await nextOfType("members", watcher)
            // An instance that crashed: its lease is in Redis, and nobody renews it. The
            // clock starts with the lease, not with the join (late on a busy machine).
            let started = ContinuousClock.now
            try await plantCrashedLease(channel: channel, id: "ghost-id", name: "Ghost", lifetime: .milliseconds(1500))
            #expect((await nextOfType("join", watcher)?["member"] as? [String: Any])?["name"] as? String == "Ghost")
            #expect((await nextOfType("leave", watcher, timeout: .seconds(4))?["member"] as? [String: Any])?["id"] as? String == "ghost-id")
            #expect(ContinuousClock.now - started >= .milliseconds(1400), "when the lease ends, not before")
            await watcher.disconnect()
        }
    }

    // MARK: Helpers

    func open(_ server: TestServer, _ channel: String, _ person: Person, name: String? = nil) async throws -> ChatWebSocket {
        let query = "channel=\(channel)" + (name.map { "&name=" + ChatHTTP.formEncode($0) } ?? "")
        return try await ChatWebSocket.connect(port: server.port, path: "/wb/?\(query)", headers: [person.header], subprotocols: ["chat.v1"])
    }

    enum Admission: Equatable {
        case admitted
        /// With the close code, if a close frame came.
        case refused(UInt16?)
    }

    /// Whether a chat.v1 socket was let in: an admitted one is told who is in the room
    /// first (with presence on); a refused one gets a close frame and nothing else.
    func admission(of socket: ChatWebSocket) async -> Admission {
        while let event = await socket.next(timeout: .seconds(10)) {
            switch event {
            case .text: return .admitted
            case .close(let code, _): return .refused(code)
            case .disconnected: return .refused(nil)
            default: continue
            }
        }
        return .refused(nil)
    }

    /// The HTTP refusal of an upgrade, or `nil` if it was accepted.
    func refusal(_ connect: () async throws -> ChatWebSocket) async -> ChatWebSocket.Refused? {
        do {
            let socket = try await connect()
            await socket.disconnect()
            return nil
        } catch let refused as ChatWebSocket.Refused {
            return refused
        } catch {
            return nil
        }
    }
}
