import ChatClient
import ChatServer
import ChatTestSupport
import Foundation
import Logging
import NIOPosix
import Redis
import Testing

@Suite("Presence and names")
struct PresenceAndNamesTests {
    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func aNameTravelsWithItsMessageToChatV1AndHistoryButNotToTheOriginalProtocol(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let original = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            let chatV1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            let sent = try await ChatHTTP.send(port: server.port, data: "hi", channel: channel, name: "  Ada ✨ Lovelace ")
            #expect(sent.body == "ok")
            #expect(sent.header("chat-offset") == "1" && sent.header("chat-epoch") != nil, "the page learns which message is its own")
            #expect(await original.nextText() == "hi", "the original protocol gets the text alone")
            let frame = try #require(await nextOfType("message", chatV1))
            #expect(frame["name"] as? String == "Ada ✨ Lovelace", "trimmed")
            #expect(frame["data"] as? String == "hi")
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)")
            #expect(history.body.contains(#""name":"Ada ✨ Lovelace","data":"hi""#))

            // No name, or only spaces: no name field at all.
            _ = try await ChatHTTP.send(port: server.port, data: "anon", channel: channel, name: "  ")
            let anonymous = try #require(await nextOfType("message", chatV1))
            #expect(anonymous["data"] as? String == "anon" && anonymous["name"] == nil)

            for (bad, why) in [(String(repeating: "n", count: 33), "at most 32"), ("a\nb", "line breaks"), ("a\u{0}b", "control")] {
                let refused = try await ChatHTTP.send(port: server.port, data: "x", channel: channel, name: bad)
                #expect(refused.status == 400)
                #expect(refused.body.hasPrefix("Invalid name: ") && refused.body.contains(why), "\(refused.body)")
            }
            await original.disconnect()
            await chatV1.disconnect()
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func presenceCountsPeopleNotTabsAndFollowsThemOut(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, {
            $0.presenceInterval = .milliseconds(200)
            $0.presenceGrace = .zero
        }) { server in
            let channel = uniqueChannel()
            let one = Person()
            let two = Person()
            func open(_ person: Person) async throws -> ChatWebSocket {
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", headers: [person.header], subprotocols: ["chat.v1"])
            }
            let first = try await open(one)
            #expect(try await online(first) == 1)
            let secondTab = try await open(one)
            #expect(try await online(secondTab) == 1, "a second tab of the same browser is told the count, and does not add to it")
            let other = try await open(two)
            #expect(try await online(other) == 2)
            #expect(try await online(first, until: 2) == 2)
            await other.disconnect()
            #expect(try await online(first, until: 1) == 1)
            await secondTab.disconnect()
            #expect(await nextOfType("presence", first, timeout: .milliseconds(800)) == nil, "one tab closing of a browser still here changes nothing")
            await first.disconnect()
        }
    }

    @Test func presenceIsCountedOverInstancesAndAnInstanceThatStopsStopsCounting() async throws {
        let settings: (inout ChatConfiguration) -> Void = {
            $0.presenceInterval = .milliseconds(200)
            $0.presenceLifetime = .seconds(2)
            $0.presenceGrace = .zero
        }
        let a = try await TestServer.start(broker: .redis, settings)
        let b = try await TestServer.start(broker: .redis, settings)
        let channel = uniqueChannel()
        let onA = try await ChatWebSocket.connect(port: a.port, path: "/wb/?channel=\(channel)", headers: [Person().header], subprotocols: ["chat.v1"])
        let onB = try await ChatWebSocket.connect(port: b.port, path: "/wb/?channel=\(channel)", headers: [Person().header], subprotocols: ["chat.v1"])
        #expect(try await online(onA, until: 2) == 2, "counted over both instances")
        #expect(try await online(onB, until: 2) == 2)
        await onB.disconnect()
        #expect(try await online(onA, until: 1) == 1, "a person leaving another instance is seen here")
        await b.stop()

        // A person of an instance that crashed: in Redis, never refreshed again.
        try await plantCrashedLease(channel: channel, id: "ghost-of-a-crash", lifetime: .milliseconds(1500))
        #expect(try await online(onA, until: 2) == 2)
        let started = ContinuousClock.now
        #expect(try await online(onA, until: 1, timeout: .seconds(15)) == 1, "the crashed instance's person stops counting")
        #expect(ContinuousClock.now - started > .milliseconds(500), "when their lifetime ends, not before")
        await onA.disconnect()
        await a.stop()
    }
}

/// The next chat.v1 frame of `type`, skipping others.
func nextOfType(_ type: String, _ socket: ChatWebSocket, timeout: Duration = .seconds(5)) async -> [String: Any]? {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        guard let text = await socket.nextText(timeout: deadline - ContinuousClock.now) else { return nil }
        let frame = text.jsonObject
        if frame["type"] as? String == type { return frame }
    }
    return nil
}

/// The `online` of the next presence frame, or of the first one equal to `until`.
func online(_ socket: ChatWebSocket, until wanted: Int? = nil, timeout: Duration = .seconds(10)) async throws -> Int? {
    let deadline = ContinuousClock.now + timeout
    var last: Int?
    while ContinuousClock.now < deadline {
        guard let frame = await nextOfType("presence", socket, timeout: deadline - ContinuousClock.now) else { return last }
        last = frame["online"] as? Int
        if wanted == nil || last == wanted { return last }
    }
    return last
}
