import ChatClient
import ChatServer
import Testing

@Suite("Connection limit")
struct ConnectionLimitTests {
    @Test func theConnectionTooManyIsRefusedWith503AMessageAndALogLineAndTheOthersStayServed() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, { $0.maximumConnections = 3 }) { server in
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
