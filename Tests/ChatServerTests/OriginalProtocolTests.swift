import ChatClient
import ChatServer
import Testing

/// What a client written for the original Tornado app relies on, checked against both brokers.
@Suite("The original app's protocol")
struct OriginalProtocolTests {
    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func postAnswersOkAndTheCookieChannelGetsRawText(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let listener = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "theme=dark; channel=\(channel)")])
            let other = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(uniqueChannel())")])
            let response = try await ChatHTTP.send(port: server.port, data: "hello <b>world</b> & ünïcode", channel: channel)
            #expect(response.status == 200)
            #expect(response.body == "ok")
            #expect(response.header("Access-Control-Allow-Origin") == "*")
            #expect(response.header("Access-Control-Allow-Headers") == "x-requested-with")
            #expect(response.header("Access-Control-Allow-Methods") == "POST,GET,PUT,DELETE")
            #expect(await listener.nextText() == "hello <b>world</b> & ünïcode")
            #expect(await other.nextText(timeout: .milliseconds(300)) == nil)
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func queryParameterChoosesTheChannelToo(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb?channel=\(channel)")
            #expect(try await ChatHTTP.send(port: server.port, data: "via query", channel: channel).body == "ok")
            #expect(await socket.nextText() == "via query")
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func withoutChannelEverythingIsChannel1(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let socket = try await ChatWebSocket.connect(port: server.port)
            let marker = uniqueChannel("default")
            #expect(try await ChatHTTP.send(port: server.port, data: marker, channel: nil).body == "ok")
            // Other tests may use channel_1 on the shared Redis: look for our marker.
            var found = false
            while let text = await socket.nextText() {
                if text == marker {
                    found = true
                    break
                }
            }
            #expect(found)
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func messagesArriveInPublishOrder(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            for index in 1...40 {
                #expect(try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel).body == "ok")
            }
            var received: [String] = []
            for _ in 1...40 { received.append(await socket.nextText() ?? "timeout") }
            #expect(received == (1...40).map { "m\($0)" })
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func fieldsFromQueryAndMultipartBodiesWork(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            let viaQuery = try await ChatHTTP.request("POST", port: server.port, path: "/send?data=from+query&channel=\(channel)")
            #expect(viaQuery.body == "ok")
            #expect(await socket.nextText() == "from query")
            let boundary = "----chatroomTestBoundary"
            let body = "--\(boundary)\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\nfrom\r\nmultipart\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"channel\"\r\n\r\n\(channel)\r\n--\(boundary)--\r\n"
            let viaMultipart = try await ChatHTTP.request(
                "POST", port: server.port, path: "/send/",
                headers: [("Content-Type", "multipart/form-data; boundary=\(boundary)")], body: body
            )
            #expect(viaMultipart.body == "ok")
            #expect(await socket.nextText() == "from\r\nmultipart")
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func badPostsAreRefusedWithAMessageAndNothingIsPublished(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.maximumMessageSize = 1000 }) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            let missing = try await ChatHTTP.send(port: server.port, data: nil, channel: channel)
            #expect(missing.status == 400)
            #expect(missing.body.contains("'data'"))
            #expect(missing.header("Access-Control-Allow-Origin") == "*")
            let blank = try await ChatHTTP.send(port: server.port, data: "   ", channel: channel)
            #expect(blank.status == 400)
            let badChannel = try await ChatHTTP.send(port: server.port, data: "x", channel: "no spaces allowed")
            #expect(badChannel.status == 400)
            #expect(badChannel.body.contains("channel name"))
            let tooLong = try await ChatHTTP.send(port: server.port, data: String(repeating: "x", count: 1001), channel: channel)
            #expect(tooLong.status == 413)
            #expect(tooLong.body.contains("1000"))
            #expect(await socket.nextText(timeout: .milliseconds(300)) == nil)
        }
    }

    @Test func preflightAnswersWithTheCORSHeaders() async throws {
        try await withServer(broker: .memory) { server in
            let response = try await ChatHTTP.request("OPTIONS", port: server.port, path: "/send/")
            #expect(response.status == 204)
            #expect(response.header("Access-Control-Allow-Methods") == "POST,GET,PUT,DELETE")
        }
    }

    @Test func textFromAnOriginalClientIsIgnoredAndTheSocketStaysOpen() async throws {
        try await withServer(broker: .memory) { server in
            let socket = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=talk")])
            try await socket.send(text: "heartbeat")
            try await socket.send(text: "{\"not\":\"a command\"}")
            #expect(try await ChatHTTP.send(port: server.port, data: "after", channel: "talk").body == "ok")
            #expect(await socket.nextText() == "after")
        }
    }
}
