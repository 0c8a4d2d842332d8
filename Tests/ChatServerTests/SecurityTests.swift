import ChatClient
import Foundation
import NIOCore
import Testing

@testable import ChatServer

@Suite("Hostile input: the building blocks")
struct SecurityUnitTests {
    @Test func forwardedForIsBelievedOnlyFromTrustedProxies() throws {
        let proxies = try TrustedProxies(parsing: "10.0.0.0/8, ::1")
        let proxy = try SocketAddress(ipAddress: "10.1.2.3", port: 5000)
        let stranger = try SocketAddress(ipAddress: "203.0.113.9", port: 5000)
        #expect(proxies.clientAddress(peer: stranger, forwardedFor: ["198.51.100.7"]) == "203.0.113.9")
        #expect(proxies.clientAddress(peer: proxy, forwardedFor: ["198.51.100.7"]) == "198.51.100.7")
        // The last hop that is not a trusted proxy: what the client wrote itself is ignored.
        #expect(proxies.clientAddress(peer: proxy, forwardedFor: ["1.2.3.4, 198.51.100.7, 10.9.9.9"]) == "198.51.100.7")
        #expect(proxies.clientAddress(peer: proxy, forwardedFor: []) == "10.1.2.3")
        #expect(proxies.clientAddress(peer: proxy, forwardedFor: ["not-an-address"]) == "10.1.2.3")
        #expect(TrustedProxies.none.clientAddress(peer: proxy, forwardedFor: ["198.51.100.7"]) == "10.1.2.3")
        #expect(proxies.contains("::1") && !proxies.contains("::2") && !proxies.contains("11.0.0.1"))
        #expect(throws: ConfigurationError.self) { try TrustedProxies(parsing: "10.0.0.0/33") }
        #expect(throws: ConfigurationError.self) { try TrustedProxies(parsing: "proxy.example") }
    }

    @Test func aTokenBucketAllowsItsBurstThenItsRate() {
        let limiter = RateLimiter(rate: 2, burst: 3)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        for _ in 0..<3 { #expect(limiter.take("a", now: start) == nil) }
        let wait = limiter.take("a", now: start)
        #expect(wait != nil && wait! <= .milliseconds(500))
        #expect(limiter.take("b", now: start) == nil, "another key has its own bucket")
        #expect(limiter.take("a", now: start + .milliseconds(500)) == nil, "half a second refills one token at 2/s")
        var socket = SocketRateLimit(rate: 1, burst: 2, now: start)
        let taken = [socket.take(now: start), socket.take(now: start), socket.take(now: start), socket.take(now: start + .seconds(1))]
        #expect(taken == [true, true, false, true])
    }

    @Test func hmacSHA256MatchesRFC4231() {
        let mac = HMACSHA256.mac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(mac.map { String(format: "%02x", $0) }.joined() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(HMACSHA256.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!HMACSHA256.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!HMACSHA256.constantTimeEqual([1, 2, 3], [1, 2]))
    }

    @Test func connectTokensAreCheckedForSignatureExpiryAndChannel() {
        let secret = "correct horse"
        let token = ConnectToken(channel: "room", expiry: 2_000).signed(with: secret)
        #expect(ConnectToken.verify(token, channel: "room", secret: secret, now: 1_000) == .success(ConnectToken(channel: "room", expiry: 2_000)))
        #expect(ConnectToken.verify(token, channel: "room", secret: secret, now: 2_000) == .failure(.expired))
        #expect(ConnectToken.verify(token, channel: "hall", secret: secret, now: 1_000) == .failure(.otherChannel("room")))
        #expect(ConnectToken.verify(token, channel: "room", secret: "another secret", now: 1_000) == .failure(.badSignature))
        #expect(ConnectToken.verify(nil, channel: "room", secret: secret, now: 1_000) == .failure(.missing))
        #expect(ConnectToken.verify("garbage", channel: "room", secret: secret, now: 1_000) == .failure(.malformed))
        // An altered payload (a later expiry) with the old signature.
        let forged = ConnectToken(channel: "room", expiry: 9_999).signed(with: "guess").split(separator: ".")[0] + "." + token.split(separator: ".")[1]
        #expect(ConnectToken.verify(String(forged), channel: "room", secret: secret, now: 1_000) == .failure(.badSignature))
        let anyChannel = ConnectToken(channel: nil, expiry: 2_000).signed(with: secret)
        #expect((try? ConnectToken.verify(anyChannel, channel: "hall", secret: secret, now: 1_000).get()) != nil)
    }
}

@Suite("Hostile input: refusals")
struct SecurityTests {
    @Test func aFloodFromOneAddressIsRefusedWith429WhileAnotherAddressIsServed() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, {
            // A burst of 3, then one message every 20 s: a slow machine never earns a fourth here.
            $0.sendRate = RateLimit(rate: 0.05, burst: 3)
            $0.trustedProxies = "127.0.0.1"
        }) { server in
            let channel = uniqueChannel()
            let listener = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            func post(_ text: String, from address: String) async throws -> HTTPResult {
                try await ChatHTTP.send(port: server.port, data: text, channel: channel, headers: [("X-Forwarded-For", address)])
            }
            for index in 0..<3 { #expect(try await post("flood\(index)", from: "198.51.100.1").status == 200) }
            let refused = try await post("flood3", from: "198.51.100.1")
            #expect(refused.status == 429)
            #expect(refused.body.contains("Too many messages from your address"))
            #expect(Int(refused.header("Retry-After") ?? "") ?? 0 >= 1)
            #expect(refused.header("Access-Control-Allow-Origin") == "*")
            #expect(!logs.lines(containing: "Refused a message").filter { $0.contains("status=429") }.isEmpty)
            #expect(try await post("calm", from: "198.51.100.2").status == 200)
            var received: [String] = []
            for _ in 0..<4 { if let text = await listener.nextText() { received.append(text) } }
            #expect(received == ["flood0", "flood1", "flood2", "calm"], "nothing refused was published")
        }
    }

    @Test func historyReadsFromOneAddressAreLimitedToo() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, {
            // A burst of 2, then one read every 20 s: a slow machine never earns a third here.
            $0.historyRate = RateLimit(rate: 0.05, burst: 2)
            $0.trustedProxies = "127.0.0.1"
        }) { server in
            func read(from address: String) async throws -> HTTPResult {
                try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=hall", headers: [("X-Forwarded-For", address)])
            }
            for _ in 0..<2 { #expect(try await read(from: "198.51.100.7").status == 200) }
            let refused = try await read(from: "198.51.100.7")
            #expect(refused.status == 429)
            #expect(refused.body.contains("Too many history reads from your address: at most 0.1 a second. Retry in "), "\(refused.body)")
            #expect(Int(refused.header("Retry-After") ?? "") ?? 0 >= 1)
            #expect(!logs.lines(containing: "Refused a history request").filter { $0.contains("status=429") && $0.contains("198.51.100.7") }.isEmpty)
            #expect(try await read(from: "198.51.100.8").status == 200, "another address is served")
            let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
            #expect(metrics[#"chatroom_refusals_total{route="/history",reason="rate_limited"}"#] == 1)
        }
    }

    @Test func aSocketThatSendsTooFastIsClosedWith1008AndTheOthersStay() async throws {
        try await withServer(broker: .memory, { $0.socketMessageRate = RateLimit(rate: 0.05, burst: 3) }) { server in
            let channel = uniqueChannel()
            let chatty = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            let quiet = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            for _ in 0..<6 { try? await chatty.send(text: #"{"type":"ping"}"#) }
            var code: UInt16?
            while let event = await chatty.next(timeout: .seconds(5)) {
                if case .close(let closeCode, let reason) = event {
                    code = closeCode
                    #expect(reason.contains("too many messages"))
                    break
                }
            }
            #expect(code == 1008)
            #expect(try await ChatHTTP.send(port: server.port, data: "still here", channel: channel).status == 200)
            #expect(try #require(await quiet.nextText()).contains("still here"))
        }
    }

    @Test func originsOutsideTheListAreRefused() async throws {
        try await withServer(broker: .memory, { $0.allowedOrigins = ["https://chat.example"] }) { server in
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, headers: [("Origin", "https://evil.example")])
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 403 && refused.body.contains("may not open sockets")
            }
            _ = try await ChatWebSocket.connect(port: server.port, headers: [("Origin", "https://chat.example")])
            _ = try await ChatWebSocket.connect(port: server.port)  // not a browser: no Origin
            let evil = try await ChatHTTP.send(port: server.port, data: "x", channel: nil, headers: [("Origin", "https://evil.example")])
            #expect(evil.status == 403)
            #expect(evil.header("Access-Control-Allow-Origin") == nil)
            let good = try await ChatHTTP.send(port: server.port, data: "x", channel: nil, headers: [("Origin", "https://chat.example")])
            #expect(good.status == 200)
            #expect(good.header("Access-Control-Allow-Origin") == "https://chat.example")
            #expect(good.header("Vary") == "Origin")
        }
    }

    @Test func thePublishTokenIsRequiredWhenSet() async throws {
        try await withServer(broker: .memory, { $0.publishToken = "s3cret" }) { server in
            let none = try await ChatHTTP.send(port: server.port, data: "hi", channel: nil)
            #expect(none.status == 401)
            #expect(none.body.contains("publish token"))
            #expect(none.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            let wrong = try await ChatHTTP.send(port: server.port, data: "hi", channel: nil, headers: [("Authorization", "Bearer guess")])
            #expect(wrong.status == 401)
            let bearer = try await ChatHTTP.send(port: server.port, data: "hi", channel: nil, headers: [("Authorization", "Bearer s3cret")])
            #expect(bearer.status == 200)
            let field = try await ChatHTTP.request("POST", port: server.port, path: "/send/", headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "data=hi&token=s3cret")
            #expect(field.status == 200)
        }
    }

    @Test func theConnectSecretRequiresAValidTokenForTheChannel() async throws {
        let secret = "a long shared secret"
        try await withServer(broker: .memory, { $0.connectSecret = secret }) { server in
            let now = Int64(Date().timeIntervalSince1970)
            func refusal(_ path: String) async -> (Int, String)? {
                do {
                    _ = try await ChatWebSocket.connect(port: server.port, path: path)
                    return nil
                } catch let refused as ChatWebSocket.Refused {
                    return (refused.status, refused.body)
                } catch {
                    return (0, "\(error)")
                }
            }
            #expect(await refusal("/wb/?channel=room")?.0 == 401)
            #expect(await refusal("/wb/?channel=room")?.1.contains("needs a token") == true)
            let valid = ConnectToken(channel: "room", expiry: now + 60).signed(with: secret)
            #expect(await refusal("/wb/?channel=room&token=\(valid)") == nil)
            #expect(await refusal("/wb/?channel=hall&token=\(valid)")?.1.contains("not this one") == true)
            let expired = ConnectToken(channel: "room", expiry: now - 1).signed(with: secret)
            #expect(await refusal("/wb/?channel=room&token=\(expired)")?.1.contains("expired") == true)
            let forged = ConnectToken(channel: "room", expiry: now + 60).signed(with: "not the secret")
            #expect(await refusal("/wb/?channel=room&token=\(forged)")?.1.contains("signature") == true)
            // As a header too (clients that can set one).
            _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=room", headers: [("Authorization", "Bearer \(valid)")])
        }
    }

    @Test func socketsPerAddressAreCapped() async throws {
        try await withServer(broker: .memory, { $0.maximumSocketsPerAddress = 2 }) { server in
            var sockets = [
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=one"),
                try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=two"),
            ]
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=one")
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 503 && refused.body.contains("Too many sockets from your address")
            }
            await sockets.removeLast().disconnect()
            // The place frees once the server has seen the close.
            var reopened: ChatWebSocket?
            for _ in 0..<50 where reopened == nil {
                reopened = try? await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=one")
                if reopened == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(reopened != nil)
            await reopened?.disconnect()
            for socket in sockets { await socket.disconnect() }
        }
    }

    @Test func channelsPerInstanceAreCapped() async throws {
        try await withServer(broker: .memory, { $0.maximumChannels = 2 }) { server in
            let one = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=one")
            let two = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=two")
            let alsoOne = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=one")
            await #expect {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=three")
            } throws: { error in
                guard let refused = error as? ChatWebSocket.Refused else { return false }
                return refused.status == 503 && refused.body.contains("as many channels as it may")
            }
            for socket in [one, two, alsoOne] { await socket.disconnect() }
        }
    }

    @Test func aClientTooSlowToSendItsRequestGets408AndOthersAreServed() async throws {
        try await withServer(broker: .memory, { $0.requestTimeout = .seconds(1) }) { server in
            let started = ContinuousClock.now
            let slow = Task {
                try await ChatHTTP.exchange(host: "127.0.0.1", port: server.port, bytes: ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n"), timeout: .seconds(10))
            }
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/").status == 200)
            let answer = String(buffer: try await slow.value)
            #expect(answer.hasPrefix("HTTP/1.1 408"))
            #expect(answer.contains("did not arrive within 1 s"))
            #expect(ContinuousClock.now - started < .seconds(9), "the 408 after about 1 s, not at the client's 10 s timeout")
            // A socket is no slow request: it outlives the deadline.
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)")
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await ChatHTTP.send(port: server.port, data: "after the deadline", channel: channel).status == 200)
            #expect(await socket.nextText() == "after the deadline")
        }
    }

    @Test func aBodyOverTheLimitIs413() async throws {
        try await withServer(broker: .memory, { $0.maximumMessageSize = 100; $0.maximumBodySize = 200 }) { server in
            let result = try await ChatHTTP.request(
                "POST", port: server.port, path: "/send/",
                headers: [("Content-Type", "application/x-www-form-urlencoded")],
                body: "data=hi&padding=" + String(repeating: "x", count: 300)
            )
            #expect(result.status == 413)
            #expect(result.body.contains("larger than 200 bytes"))
        }
    }
}
