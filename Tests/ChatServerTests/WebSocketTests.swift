import ChatClient
import ChatServer
import Testing

/// The lean /wb/ pipeline: refusals, close codes, heartbeat, chat.v1 and drain.
@Suite("WebSocket /wb/")
struct WebSocketTests {
    @Test func refusedUpgradesSayWhyWithAStatus() async throws {
        try await withServer(broker: .memory) { server in
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=bad%20name")
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 400 && refused.body.contains("channel name")
            }
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(String(repeating: "x", count: 65))")])
            } throws: { error in
                (error as? ChatWebSocket.Refused)?.status == 400
            }
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/elsewhere")
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 404 && refused.body.contains("/wb/")
            }
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, subprotocols: ["mqtt"])
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 400 && refused.body.contains("chat.v1")
            }
            // The server keeps serving everyone else.
            let socket = try await ChatWebSocket.connect(port: server.port)
            #expect(try await ChatHTTP.send(port: server.port, data: "still serving", channel: nil).body == "ok")
            #expect(await socket.nextText() == "still serving")
        }
    }

    @Test func protocolViolationsCloseWithTheRightCode() async throws {
        try await withServer(broker: .memory, { $0.maximumMessageSize = 100 }) { server in
            let binary = try await ChatWebSocket.connect(port: server.port)
            try await binary.sendFrame(opcode: 0x2, payload: [1, 2, 3])
            #expect(await closeCode(of: binary) == 1003)

            let tooBig = try await ChatWebSocket.connect(port: server.port)
            try await tooBig.send(text: String(repeating: "x", count: 101))
            #expect(await closeCode(of: tooBig) == 1009)

            let unmasked = try await ChatWebSocket.connect(port: server.port)
            try await unmasked.sendFrame(opcode: 0x1, payload: Array("hi".utf8), masked: false)
            #expect(await closeCode(of: unmasked) == 1002)

            let badUTF8 = try await ChatWebSocket.connect(port: server.port)
            try await badUTF8.sendFrame(opcode: 0x1, payload: [0xC3, 0x28])
            #expect(await closeCode(of: badUTF8) == 1007)

            let fragmentedTooBig = try await ChatWebSocket.connect(port: server.port)
            try await fragmentedTooBig.sendFrame(opcode: 0x1, payload: Array(repeating: 0x61, count: 60), fin: false)
            try await fragmentedTooBig.sendFrame(opcode: 0x0, payload: Array(repeating: 0x61, count: 60), fin: true)
            #expect(await closeCode(of: fragmentedTooBig) == 1009)
        }
    }

    @Test func closeHandshakeIsEchoed() async throws {
        try await withServer(broker: .memory) { server in
            let socket = try await ChatWebSocket.connect(port: server.port)
            try await socket.close(code: 1000)
            #expect(await closeCode(of: socket) == 1000)
        }
    }

    @Test func pingsAreAnsweredWithPongs() async throws {
        try await withServer(broker: .memory) { server in
            let socket = try await ChatWebSocket.connect(port: server.port)
            try await socket.sendFrame(opcode: 0x9, payload: [7, 8])
            #expect(await socket.next() == .pong([7, 8]))
        }
    }

    @Test func serverPingsAndClosesASocketThatStopsAnswering() async throws {
        try await withServer(broker: .memory, { $0.pingInterval = .seconds(1) }) { server in
            let socket = try await ChatWebSocket.connect(port: server.port, answerPings: false)
            // This client never answers pings: one ping, then the server hangs up.
            var events: [ChatWebSocket.Event] = []
            while events.last != .disconnected, let event = await socket.next(timeout: .seconds(10)) { events.append(event) }
            #expect(events == [.ping([]), .disconnected])
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func chatV1ClientsGetJSONWithContiguousOffsets(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            #expect(socket.subprotocol == "chat.v1")
            for text in ["one", "two \"quoted\"\n"] {
                #expect(try await ChatHTTP.send(port: server.port, data: text, channel: channel).body == "ok")
            }
            let first = try #require(await socket.nextText()).jsonObject
            let second = try #require(await socket.nextText()).jsonObject
            #expect(first["type"] as? String == "message")
            #expect(first["channel"] as? String == channel)
            #expect(first["data"] as? String == "one")
            #expect(second["data"] as? String == "two \"quoted\"\n")
            #expect(first["offset"] as? Int == 1)
            #expect(second["offset"] as? Int == 2)
            #expect(first["epoch"] as? String == second["epoch"] as? String)
            #expect((first["time"] as? Int ?? 0) > 1_700_000_000_000)

            try await socket.send(text: #"{"type":"ping"}"#)
            #expect(await socket.nextText() == #"{"type":"pong"}"#)
            try await socket.send(text: "not json")
            #expect(try #require(await socket.nextText()).jsonObject["type"] as? String == "error")
        }
    }

    @Test func shutdownClosesSocketsWithGoingAway() async throws {
        let server = try await TestServer.start(broker: .memory)
        let socket = try await ChatWebSocket.connect(port: server.port)
        let stopping = Task { await server.stop() }
        #expect(await closeCode(of: socket) == 1001)
        try await socket.close(code: 1001)
        await stopping.value
    }
}

import Foundation

extension String {
    var jsonObject: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(utf8))) as? [String: Any] ?? [:]
    }
}
