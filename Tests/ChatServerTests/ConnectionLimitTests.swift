import ChatClient
@testable import ChatServer
import Testing

@Suite("Connection limit")
struct ConnectionLimitTests {
    @Test func theConnectionTooManyIsRefusedWith503AMessageAndALogLineAndTheOthersStayServed() async throws {
        let logs = LogCapture()
        // No places kept for plain requests: sockets may fill the server.
        try await withServer(broker: .memory, logs: logs, { configuration in
            configuration.maximumConnections = 3
            configuration.httpReserve = 0
        }) { server in
            let channel = uniqueChannel()
            var sockets: [ChatWebSocket] = []
            for _ in 0..<3 {
                sockets.append(try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)"))
            }
            // A fourth connection: a page load, or another socket.
            let page = try await ChatHTTP.request("GET", port: server.port, path: "/")
            #expect(page.status == 503)
            #expect(page.body.contains("The server is full"))
            #expect(page.header("Retry-After") == "5")
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            } throws: { error in
                (error as? ChatWebSocket.Refused)?.status == 503
            }
            #expect(!logs.lines(containing: "Refusing connections").isEmpty)
            // The sockets already open are still served.
            let sent = try await ChatHTTP.sendOverSocketFreeConnection(sockets: &sockets, port: server.port, data: "still here", channel: channel)
            #expect(sent.status == 200, "\(sent.status) \(sent.body)")
            for socket in sockets { #expect(await socket.nextText() == "still here") }
            // Once one closes, a new connection is taken again.
            await sockets.removeLast().disconnect()
            var page2 = try await ChatHTTP.request("GET", port: server.port, path: "/")
            for _ in 0..<50 where page2.status != 200 {
                try await Task.sleep(for: .milliseconds(20))
                page2 = try await ChatHTTP.request("GET", port: server.port, path: "/")
            }
            #expect(page2.status == 200)
            for socket in sockets { await socket.disconnect() }
        }
    }
}

@Suite("Publishing and health at capacity")
struct HTTPReserveTests {
    @Test func withTheServerFullOfSocketsPublishingHistoryHealthAndMetricsStillAnswer() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, { configuration in
            configuration.maximumConnections = 8
            configuration.httpReserve = 3
        }) { server in
            let channel = uniqueChannel()
            var sockets: [ChatWebSocket] = []
            for index in 0..<5 {
                sockets.append(try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: index.isMultiple(of: 2) ? ["chat.v1"] : []))
            }
            // The sixth socket: 503 before its upgrade, with words and a log line.
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 503 && refused.body.contains("holds as many sockets as it may (5)")
            }
            #expect(!logs.lines(containing: "Refusing sockets").isEmpty)
            // The one message meant for all of them goes, with every socket still open.
            let sent = try await ChatHTTP.send(port: server.port, data: "to everyone", channel: channel)
            #expect(sent.status == 200, "\(sent.status) \(sent.body)")
            for socket in sockets { #expect(await socket.nextText()?.contains("to everyone") == true) }
            for path in ["/healthz", "/readyz", "/metrics", "/history?channel=\(channel)"] {
                #expect(try await ChatHTTP.request("GET", port: server.port, path: path).status == 200, "\(path)")
            }
            // A refused upgrade gives its place back: once a socket closes, another is taken.
            await sockets.removeLast().disconnect()
            var again: ChatWebSocket?
            for _ in 0..<50 where again == nil {
                again = try? await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
                if again == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(again != nil)
            for socket in sockets + [again].compactMap({ $0 }) { await socket.disconnect() }
        }
    }

    @Test func theReserveDefaultsToTwoPercentAndAtLeastFifty() {
        #expect(ConnectionBudget.defaultHTTPReserve(limit: 19_900) == 398)
        #expect(ConnectionBudget.defaultHTTPReserve(limit: 1_000) == 50)
        #expect(ConnectionBudget.defaultHTTPReserve(limit: 3) == 2, "a socket still fits")
    }
}

extension ChatHTTP {
    /// Posts a message when every connection is taken: closes one socket first to make
    /// room for the POST, and returns the answer.
    fileprivate static func sendOverSocketFreeConnection(sockets: inout [ChatWebSocket], port: Int, data: String, channel: String) async throws -> HTTPResult {
        await sockets.removeFirst().disconnect()
        var result = try await send(port: port, data: data, channel: channel)
        for _ in 0..<50 where result.status == 503 {
            try await Task.sleep(for: .milliseconds(20))
            result = try await send(port: port, data: data, channel: channel)
        }
        return result
    }
}
