@testable import Chat
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Crypto
import CryptoExtras
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Makes JWTs the way a site's login would, and the ways an attacker would.
struct Minter {
    static let secret = "a-test-jwt-secret-of-at-least-32-bytes!"
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let ec = P256.Signing.PrivateKey()

    static func segment(_ object: [String: Any]) -> String {
        Base64URL.encode(Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
    }

    /// Claims for `sub`, valid for an hour unless changed.
    static func claims(_ sub: String = "user-\(UInt32.random(in: 0...UInt32.max))", name: String? = nil, _ extra: [String: Any] = [:]) -> [String: Any] {
        var claims: [String: Any] = ["sub": sub, "exp": Int(Date().timeIntervalSince1970) + 3600]
        if let name { claims["name"] = name }
        claims.merge(extra) { $1 }
        return claims
    }

    static func hs256(_ claims: [String: Any], secret: String = Minter.secret, header: [String: Any] = [:]) -> String {
        let signed = segment(["alg": "HS256", "typ": "JWT"].merging(header) { $1 }) + "." + segment(claims)
        return signed + "." + Base64URL.encode(HMACSHA256.mac(key: Array(secret.utf8), message: Array(signed.utf8)))
    }

    static func rs256(_ claims: [String: Any], key: _RSA.Signing.PrivateKey = Minter.rsa) -> String {
        let signed = segment(["alg": "RS256", "typ": "JWT"]) + "." + segment(claims)
        let signature = try! key.signature(for: SHA256.hash(data: Array(signed.utf8)), padding: .insecurePKCS1v1_5)
        return signed + "." + Base64URL.encode(Array(signature.rawRepresentation))
    }

    static func es256(_ claims: [String: Any], key: P256.Signing.PrivateKey = Minter.ec, kid: String? = nil) -> String {
        var header: [String: Any] = ["alg": "ES256", "typ": "JWT"]
        if let kid { header["kid"] = kid }
        let signed = segment(header) + "." + segment(claims)
        let signature = try! key.signature(for: Array(signed.utf8))
        return signed + "." + Base64URL.encode(Array(signature.rawRepresentation))
    }

    static func unsigned(_ claims: [String: Any]) -> String {
        segment(["alg": "none", "typ": "JWT"]) + "." + segment(claims) + "."
    }

    /// A PEM file of a public key, in a temporary folder.
    static func pemFile(_ pem: String) -> String {
        let path = NSTemporaryDirectory() + "chatroom-key-\(UUID().uuidString).pem"
        _ = FileManager.default.createFile(atPath: path, contents: Data(pem.utf8))
        return path
    }

    /// A JWKS of P-256 keys, and keys this server does not use.
    static func jwks(_ keys: [(kid: String, key: P256.Signing.PrivateKey)], junk: Bool = false) -> String {
        var entries = keys.map { kid, key -> [String: Any] in
            let raw = Array(key.publicKey.rawRepresentation)
            return ["kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": Base64URL.encode(Array(raw[0..<32])), "y": Base64URL.encode(Array(raw[32...]))]
        }
        if junk {
            entries += [
                ["kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "alg": "HS256"],
                ["kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA1_5", "n": "AQAB", "e": "AQAB"],
                ["kty": "OKP", "kid": "x", "crv": "X25519", "x": "AQAB"],
                ["kty": "EC", "kid": "k1-secp256k1", "crv": "secp256k1", "x": "AQAB", "y": "AQAB"],
                ["kid": "nothing"],
            ]
        }
        return String(decoding: try! JSONSerialization.data(withJSONObject: ["keys": entries]), as: UTF8.self)
    }
}

/// A login's key set on loopback: answers every request with the current body, and counts them.
final class KeySetServer: @unchecked Sendable {
    let body = NIOLockedValueBox("")
    let fetches = NIOLockedValueBox(0)
    /// Answers the head and then nothing more: a login that hangs mid-answer.
    let stalls = NIOLockedValueBox(false)
    private var channel: (any Channel)?
    var url: String { "http://127.0.0.1:\(channel!.localAddress!.port!)/.well-known/jwks.json" }

    private final class Answer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let server: KeySetServer
        var request = ""
        init(_ server: KeySetServer) { self.server = server }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            request += String(buffer: unwrapInboundIn(data))
            guard request.contains("\r\n\r\n") else { return }
            server.fetches.withLockedValue { $0 += 1 }
            let body = server.body.withLockedValue { $0 }
            if server.stalls.withLockedValue({ $0 }) {
                context.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"keys\":[")), promise: nil)
                return
            }
            let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            let channel = context.channel
            context.writeAndFlush(NIOAny(ByteBuffer(string: answer))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func start() async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Answer(self)) } }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async {
        try? await channel?.close()
    }
}

@Suite("Signing people in with the site's JWTs")
struct SignInTests {
    static let now = Int64(Date().timeIntervalSince1970)

    static func verifier(secret: String? = Minter.secret, files: [String] = [], jwks: String? = nil) async throws -> JWTVerifier {
        try #require(try await JWTVerifier.make(secret: secret, publicKeyFiles: files, jwksURL: jwks, identities: Identities(secret: Person.secret)))
    }

    /// The identity the test servers give a `sub` (they share `Person.secret`).
    static func identity(ofSubject subject: String) -> String {
        Identities(secret: Person.secret).id(ofSubject: subject)
    }

    static func refusal(_ result: Result<SignIn, TokenRefusal>) -> TokenRefusal? {
        if case .failure(let refusal) = result { return refusal }
        return nil
    }

    @Test func theTokenMatrix() async throws {
        let rsaFile = Minter.pemFile(Minter.rsa.publicKey.pemRepresentation)
        let ecFile = Minter.pemFile(Minter.ec.publicKey.pemRepresentation)
        let all = try await Self.verifier(files: [rsaFile, ecFile])
        let claims = Minter.claims("ada@example.com", name: "Ada")
        // Valid, with each kind of key.
        for token in [Minter.hs256(claims), Minter.rs256(claims), Minter.es256(claims)] {
            let signIn = try (await all.verify(token, now: Self.now)).get()
            #expect(signIn.identity == Self.identity(ofSubject: "ada@example.com") && signIn.name == "Ada" && !signIn.isModerator)
            #expect(Identities.isID(signIn.identity), "a signed-in identity has the shape of any other")
        }
        // What the server mints is what it reads.
        let minted = SignInToken(subject: "grace", name: "Grace", moderator: true, channels: ["support-*", "general"], expiry: Self.now + 60).signed(with: Minter.secret)
        let grace = try (await all.verify(minted, now: Self.now)).get()
        #expect(grace.isModerator && grace.name == "Grace" && grace.rooms?.allows(ChannelName("support-7")!) == true)
        #expect(grace.rooms?.allows(ChannelName("random")!) == false && grace.rooms?.allows(ChannelName("general")!) == true)
        // Wrong keys.
        #expect(Self.refusal(await all.verify(Minter.hs256(claims, secret: "another-secret-of-at-least-32-bytes!!"), now: Self.now)) == .badSignature)
        #expect(Self.refusal(await all.verify(Minter.rs256(claims, key: try _RSA.Signing.PrivateKey(keySize: .bits2048)), now: Self.now)) == .badSignature)
        #expect(Self.refusal(await all.verify(Minter.es256(claims, key: P256.Signing.PrivateKey()), now: Self.now)) == .badSignature)
        // alg none, however it is written.
        #expect(Self.refusal(await all.verify(Minter.unsigned(claims), now: Self.now)) == .unsigned)
        let noneUpper = Minter.segment(["alg": "NONE"]) + "." + Minter.segment(claims) + ".c2ln"
        #expect(Self.refusal(await all.verify(noneUpper, now: Self.now)) == .unsigned)
        // HS256 "signed" with the RSA public key as its secret: no HMAC key is that key.
        let confused = Minter.hs256(claims, secret: Minter.rsa.publicKey.pemRepresentation)
        let rsaOnly = try await Self.verifier(secret: nil, files: [rsaFile])
        #expect(Self.refusal(await rsaOnly.verify(confused, now: Self.now)) == .noKeyFor("HS256"))
        #expect(Self.refusal(await all.verify(confused, now: Self.now)) == .badSignature)
        #expect(Self.refusal(await rsaOnly.verify(Minter.hs256(claims), now: Self.now)) == .noKeyFor("HS256"))
        // An RS256 header over an ES256 signature, and other algorithms.
        let es = Minter.es256(claims).split(separator: ".")
        let relabelled = Minter.segment(["alg": "RS256"]) + "." + es[1] + "." + es[2]
        #expect(Self.refusal(await all.verify(relabelled, now: Self.now)) == .badSignature)
        let hs512 = Minter.segment(["alg": "HS512"]) + "." + Minter.segment(claims) + ".c2ln"
        #expect(Self.refusal(await all.verify(hs512, now: Self.now)) == .unsupportedAlgorithm("HS512"))
        // Time, with 30 s of leeway.
        #expect(Self.refusal(await all.verify(Minter.hs256(Minter.claims("a", ["exp": Self.now - 31])), now: Self.now)) == .expired)
        #expect(try (await all.verify(Minter.hs256(Minter.claims("a", ["exp": Self.now - 20])), now: Self.now)).get().expiry == Self.now - 20)
        #expect(Self.refusal(await all.verify(Minter.hs256(Minter.claims("a", ["nbf": Self.now + 60])), now: Self.now)) == .notYetValid)
        #expect(try (await all.verify(Minter.hs256(Minter.claims("a", ["nbf": Self.now + 20])), now: Self.now)).get().subject == "a")
        // Times at the edges of what a number holds: refused, never trapped on.
        for exp in [0, -1] as [Int64] {
            #expect(Self.refusal(await all.verify(Minter.hs256(Minter.claims("a", ["exp": exp])), now: Self.now)) == .expired)
        }
        for exp: Any in [Int64.max, Double(Int64.max) * 2, -Double(Int64.max)] {
            #expect(Self.refusal(await all.verify(Minter.hs256(Minter.claims("a", ["exp": exp])), now: Self.now)) == .malformed("its exp is not a time"))
            #expect(Self.refusal(await all.verify(Minter.hs256(Minter.claims("a", ["nbf": exp])), now: Self.now)) == .malformed("its nbf is not a time"))
        }
        // Malformed.
        for token in [
            "", "a.b", "not-a-token", "....", Minter.segment(["alg": "HS256"]) + ".e30", Minter.hs256(["name": "no sub"]),
            Minter.hs256(Minter.claims("a", ["exp": "tomorrow"])), Minter.hs256(Minter.claims("a", ["channels": ["bad room!"]])),
            Minter.hs256(Minter.claims("a", name: String(repeating: "n", count: 40))), Minter.hs256(Minter.claims(String(repeating: "s", count: 300))),
            "eyJhbGciOiJIUzI1NiJ9.%%%.c2ln", Minter.hs256(Minter.claims("a"), header: ["crit": ["exp"]]), String(repeating: "a", count: 9000) + ".b.c",
        ] {
            guard case .malformed(let why)? = Self.refusal(await all.verify(token, now: Self.now)) else {
                Issue.record("\(token.prefix(80)) was not refused as malformed")
                continue
            }
            #expect(!why.isEmpty && TokenRefusal.malformed(why).description.hasPrefix("Invalid token: "))
        }
        // A key set rotated: a token naming a new kid fetches the set again, once.
        let keySet = KeySetServer()
        try await keySet.start()
        let (old, new) = (P256.Signing.PrivateKey(), P256.Signing.PrivateKey())
        keySet.body.withLockedValue { $0 = Minter.jwks([("k1", old)], junk: true) }
        let fromSet = try await Self.verifier(secret: nil, jwks: keySet.url)
        #expect(try (await fromSet.verify(Minter.es256(claims, key: old, kid: "k1"), now: Self.now)).get().name == "Ada")
        keySet.body.withLockedValue { $0 = Minter.jwks([("k2", new)]) }
        #expect(try (await fromSet.verify(Minter.es256(claims, key: old, kid: "k1"), now: Self.now)).get().name == "Ada", "kept keys still verify")
        try await Task.sleep(for: .seconds(JWKSSource.refreshInterval.nanoseconds / 1_000_000_000) + .milliseconds(200))
        #expect(try (await fromSet.verify(Minter.es256(claims, key: new, kid: "k2"), now: Self.now)).get().name == "Ada", "a new kid is fetched")
        #expect(keySet.fetches.withLockedValue { $0 } == 2)
        #expect(Self.refusal(await fromSet.verify(Minter.es256(claims, key: new, kid: "k9"), now: Self.now)) == .unknownKey("k9"))
        #expect(Self.refusal(await fromSet.verify(Minter.es256(claims, key: P256.Signing.PrivateKey(), kid: "k2"), now: Self.now)) == .badSignature)
        for _ in 0..<20 { _ = await fromSet.verify(Minter.es256(claims, key: new, kid: "made-up-\(UUID())"), now: Self.now) }
        #expect(keySet.fetches.withLockedValue { $0 } == 2, "made-up kids do not make the server fetch again and again")
        // A login that hangs mid-answer: the fetch gives up within its deadline, and a
        // token of a kept key is not held up meanwhile.
        keySet.stalls.withLockedValue { $0 = true }
        try await Task.sleep(for: .seconds(JWKSSource.refreshInterval.nanoseconds / 1_000_000_000) + .milliseconds(200))
        let started = ContinuousClock.now
        let unknown = Minter.es256(claims, key: new, kid: "k3")
        async let waiting = fromSet.verify(unknown, now: Self.now)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try (await fromSet.verify(Minter.es256(claims, key: new, kid: "k2"), now: Self.now)).get().name == "Ada")
        #expect(ContinuousClock.now - started < .seconds(2), "a kept key answers at once")
        #expect(Self.refusal(await waiting) == .unknownKey("k3"))
        #expect(ContinuousClock.now - started < JWKSSource.fetchTimeout + .seconds(2))
        #expect(JWKSSource.maxAge(["public, max-age=300"]) == .seconds(300) && JWKSSource.maxAge(["max-age=5"]) == .seconds(60))
        #expect(JWKSSource.maxAge(["no-store"]) == nil && JWKSSource.maxAge(["max-age=999999"]) == .seconds(3600))
        await keySet.stop()
        // A login's key set signs for other applications too: iss and aud, when asked.
        let strict = try #require(
            try await JWTVerifier.make(
                secret: Minter.secret, publicKeyFiles: [], jwksURL: nil, expectations: .init(issuer: "https://login.example/", audience: "chat"),
                identities: Identities(secret: Person.secret)
            )
        )
        let ours = Minter.claims("a", ["iss": "https://login.example/", "aud": ["chat", "mail"]])
        #expect(try (await strict.verify(Minter.hs256(ours), now: Self.now)).get().subject == "a")
        #expect(Self.refusal(await strict.verify(Minter.hs256(ours.merging(["aud": "mail"]) { $1 }), now: Self.now)) == .otherAudience)
        #expect(Self.refusal(await strict.verify(Minter.hs256(ours.merging(["iss": "https://evil.example/"]) { $1 }), now: Self.now)) == .otherIssuer("https://evil.example/"))
        #expect(Self.refusal(await strict.verify(Minter.hs256(Minter.claims("a", ["aud": "chat"])), now: Self.now)) == .otherIssuer(nil))
        // Every sign-in ends.
        var forever = Minter.claims("a")
        forever["exp"] = nil
        #expect(Self.refusal(await all.verify(Minter.hs256(forever), now: Self.now)) == .malformed("it has no exp: a sign-in token must expire"))
        // Keys the server will not start with.
        await #expect(throws: ConfigurationError.self) { try await JWTVerifier.make(secret: "short", publicKeyFiles: [], jwksURL: nil, identities: Identities(secret: "s")) }
        await #expect(throws: ConfigurationError.self) { try await JWTVerifier.make(secret: nil, publicKeyFiles: [Minter.pemFile("not a key")], jwksURL: nil, identities: Identities(secret: "s")) }
    }

    static func signedIn(_ configure: @escaping (inout ChatConfiguration) -> Void = { _ in }) -> (inout ChatConfiguration) -> Void {
        { configuration in
            configuration.jwtSecret = Minter.secret
            configure(&configuration)
        }
    }

    @Test(arguments: ChatFeaturesTests.brokers)
    func aSignedInPersonIsTheSameOnEveryDeviceAndShowsOnlyTheirTokensName(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, Self.signedIn()) { server in
            let channel = uniqueChannel()
            let token = Minter.hs256(Minter.claims("ada-42", name: "Ada Lovelace"))
            let id = Self.identity(ofSubject: "ada-42")
            let phone = try await V2Client.connect(server, query: "token=\(token)")
            let welcome = try #require(await phone.next("welcome"))
            #expect(welcome["user"] as? String == id && welcome["name"] as? String == "Ada Lovelace" && welcome["moderator"] as? Bool == false)
            // Another device, with an anonymous cookie of its own: the token wins.
            let laptop = try await V2Client.connect(server, query: "token=\(token)&name=Mallory", person: Person())
            _ = try await phone.subscribedFrame(channel)
            _ = try await laptop.subscribedFrame(channel)
            #expect(try await laptop.ask(["type": "send", "id": "m1", "channel": channel, "data": "hello", "name": "Someone Else"])?.type == "ack")
            let seen = try #require(await phone.next("message"))
            #expect(seen["from"] as? String == id && seen["name"] as? String == "Ada Lovelace", "the name cannot be overridden")
            // POST /send/ with the token as Bearer (or the form field): the same person and name.
            let posted = try await ChatHTTP.send(port: server.port, data: "from the site", channel: channel, name: "Faker", headers: [("Authorization", "Bearer \(token)")])
            #expect(posted.status == 200)
            let viaForm = try await ChatHTTP.request(
                "POST", port: server.port, path: "/send/", headers: [("Content-Type", "application/x-www-form-urlencoded")],
                body: "data=via+form&channel=\(channel)&name=Faker&token=\(token)"
            )
            #expect(viaForm.status == 200)
            let kept = try await history(server.port, channel)
            #expect(kept.map { $0["from"] as? String } == [id, id, id] && kept.allSatisfy { $0["name"] as? String == "Ada Lovelace" })
            await phone.disconnect()
            await laptop.disconnect()
        }
    }

    @Test func refusedTokensAreRefusedEverywhereWithTheirReasonAndALogLine() async throws {
        let logs = LogCapture()
        try await withServer(broker: .memory, logs: logs, Self.signedIn()) { server in
            let channel = uniqueChannel()
            let expired = Minter.hs256(Minter.claims("a", ["exp": Self.now - 120]))
            let forged = Minter.hs256(Minter.claims("a"), secret: "not-the-servers-secret-but-long-enough")
            // chat.v2 and chat.v1: the socket opens and is closed with 4401 and the reason.
            for subprotocol in ["chat.v2", "chat.v1"] {
                let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&token=\(forged)", subprotocols: [subprotocol])
                guard case .close(let code, let reason)? = await socket.next(timeout: .seconds(5)) else {
                    Issue.record("\(subprotocol): no close frame")
                    continue
                }
                #expect(code == 4401 && reason.hasPrefix("Invalid token: its signature does not match"), "\(subprotocol): \(code) \(reason)")
                await socket.disconnect()
            }
            // The original protocol: the upgrade's 401.
            do {
                _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?token=\(expired)")
                Issue.record("the original protocol's upgrade was not refused")
            } catch let refused as ChatWebSocket.Refused {
                #expect(refused.status == 401 && refused.body.contains("Token expired"))
            }
            let sent = try await ChatHTTP.send(port: server.port, data: "x", channel: channel, headers: [("Authorization", "Bearer \(Minter.unsigned(Minter.claims()))")])
            #expect(sent.status == 401 && sent.body.hasPrefix("Invalid token: alg none is not accepted; tokens must be signed."), "\(sent.body)")
            #expect(sent.header("WWW-Authenticate") != nil)
            let read = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&token=\(expired)")
            #expect(read.status == 401 && read.body.hasPrefix("Token expired"))
            #expect(!logs.lines(containing: "Refused a WebSocket upgrade").filter { $0.contains("unauthorized") }.isEmpty)
            #expect(!logs.lines(containing: "Refused a message").filter { $0.contains("alg none") }.isEmpty)
            #expect(!logs.lines(containing: "Refused a history request").isEmpty)
        }
    }

    @Test func aTokensRoomsAreAllItOpensOnEveryPath() async throws {
        try await withServer(broker: .memory, Self.signedIn()) { server in
            let token = Minter.hs256(Minter.claims("agent-7", ["channels": ["support-*", "lobby"]]))
            let outside = uniqueChannel("sales")
            let inside = uniqueChannel("support-")
            let client = try await V2Client.connect(server, query: "token=\(token)")
            _ = await client.next("welcome")
            #expect(try await client.subscribedFrame(inside)?.channel == inside)
            try await client.subscribe(outside)
            let refused = try #require(await client.next("refused"))
            #expect(refused.int("code") == 4403 && (refused["message"] as? String ?? "").contains("does not open the room"))
            #expect(try await client.ask(["type": "send", "id": "s1", "channel": outside, "data": "x"])?.int("status") == 403)
            #expect(try await client.ask(["type": "send", "id": "s2", "channel": inside, "data": "x"])?.type == "ack")
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(outside)&token=\(token)", subprotocols: ["chat.v1"])
            #expect(await closeCode(of: v1) == 4403)
            let bearer = [("Authorization", "Bearer \(token)")]
            #expect(try await ChatHTTP.send(port: server.port, data: "x", channel: outside, headers: bearer).status == 403)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(outside)", headers: bearer).status == 403)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=lobby", headers: bearer).status == 200)
            await client.disconnect()
        }
    }

    @Test func withRequireLoginAnonymousPeopleAreAskedToSignIn() async throws {
        try await withServer(broker: .memory, Self.signedIn { $0.requireLogin = true }) { server in
            let channel = uniqueChannel()
            let anonymous = try await ChatWebSocket.connect(port: server.port, path: "/wb/", subprotocols: ["chat.v2"])
            guard case .close(let code, let reason)? = await anonymous.next(timeout: .seconds(5)) else {
                Issue.record("no close frame")
                return
            }
            #expect(code == 4401 && reason.contains("sign in"))
            #expect(try await ChatHTTP.send(port: server.port, data: "x", channel: channel, headers: [Person().header]).status == 401)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)").status == 401)
            let token = Minter.hs256(Minter.claims("ada"))
            let client = try await V2Client.connect(server, query: "token=\(token)")
            #expect(await client.next("welcome") != nil)
            #expect(try await ChatHTTP.send(port: server.port, data: "x", channel: channel, headers: [("Authorization", "Bearer \(token)")]).status == 200)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/", headers: []).status == 200, "the page itself is served")
            await client.disconnect()
        }
        // A trusted integration with the publish token still posts.
        try await withServer(broker: .memory, Self.signedIn { configuration in
            configuration.requireLogin = true
            configuration.publishToken = "integration"
        }) { server in
            let answer = try await ChatHTTP.send(port: server.port, data: "x", channel: "c", headers: [("Authorization", "Bearer integration")])
            #expect(answer.status == 200)
        }
    }

    @Test func aSocketIsClosedWhenItsTokenExpiresUnlessRefreshedFirst() async throws {
        try await withServer(broker: .memory, Self.signedIn()) { server in
            let channel = uniqueChannel()
            // exp 22 s ago: within the 30 s leeway for another 8 s.
            let soon = Int(Date().timeIntervalSince1970) - 22
            let ending = Minter.hs256(Minter.claims("ada", ["exp": soon]))
            let v2 = try await V2Client.connect(server, query: "channel=\(channel)&token=\(ending)")
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&token=\(ending)", subprotocols: ["chat.v1"])
            let kept = try await V2Client.connect(server, query: "channel=\(channel)&token=\(ending)")
            #expect(await kept.next("welcome")?.int("expires") == Int64(soon))
            // Someone else's token, and a forged one, change nothing.
            try await kept.send(["type": "refresh", "token": Minter.hs256(Minter.claims("bob"))])
            #expect((await kept.next("error")?["message"] as? String ?? "").contains("someone else"))
            try await kept.send(["type": "refresh", "token": Minter.hs256(Minter.claims("ada"), secret: "forged-forged-forged-forged-forged-!")])
            #expect((await kept.next("error")?["message"] as? String ?? "").contains("signature"))
            try await kept.send(["type": "refresh", "token": Minter.hs256(Minter.claims("ada"))])
            #expect(await kept.next("refreshed")?.int("expires") ?? 0 > soon + 3000)
            let started = ContinuousClock.now
            var closed: (UInt16?, String)?
            while closed == nil, ContinuousClock.now - started < .seconds(20), let event = await v2.socket.next(timeout: .seconds(20)) {
                if case .close(let code, let reason) = event { closed = (code, reason) }
            }
            #expect(closed?.0 == 4401 && closed?.1 == "Token expired")
            #expect(ContinuousClock.now - started < .seconds(14))
            #expect(await closeCode(of: v1, within: .seconds(14)) == 4401)
            try await kept.send(["type": "ping"])
            #expect(await kept.next("pong") != nil, "the refreshed socket lives on")
            await kept.disconnect()
        }
    }

    @Test func thePageOpenedWithATokenKnowsItsPersonAndIsKeptByNoCache() async throws {
        try await withServer(broker: .memory, Self.signedIn()) { server in
            let token = Minter.hs256(Minter.claims("ada", name: "Ada <Lovelace>", ["role": "moderator"]))
            let page = try await ChatHTTP.request("GET", port: server.port, path: "/?token=\(token)")
            #expect(page.status == 200 && page.header("Cache-Control") == "private, no-store")
            #expect(page.body.contains(#"<body data-me="\#(Self.identity(ofSubject: "ada"))" data-name="Ada &lt;Lovelace&gt;" data-moderator>"#))
            #expect(page.header("Set-Cookie") == nil, "a signed-in page needs no anonymous identity")
            // A token that does not verify: the anonymous page (its socket says why).
            let forged = try await ChatHTTP.request("GET", port: server.port, path: "/?token=\(Minter.hs256(Minter.claims("ada"), secret: String(repeating: "x", count: 40)))")
            #expect(forged.status == 200 && forged.body.contains("<body>"))
        }
    }

    @Test func aNewerTokenThatOpensFewerRoomsEndsTheOthers() async throws {
        try await withServer(broker: .memory, Self.signedIn()) { server in
            let (vip, lobby) = (uniqueChannel("vip"), uniqueChannel("lobby"))
            let client = try await V2Client.connect(server, query: "token=\(Minter.hs256(Minter.claims("ada", ["channels": [vip, lobby]])))")
            _ = await client.next("welcome")
            _ = try await client.subscribedFrame(vip)
            _ = try await client.subscribedFrame(lobby)
            try await client.send(["type": "refresh", "token": Minter.hs256(Minter.claims("ada", ["channels": [lobby]]))])
            #expect(await client.next("refreshed") != nil)
            let refused = try #require(await client.next("refused"))
            #expect(refused.channel == vip && refused.int("code") == 4403)
            #expect(try await ChatHTTP.send(port: server.port, data: "for the vip room", channel: vip).status == 200)
            #expect(try await ChatHTTP.send(port: server.port, data: "for the lobby", channel: lobby).status == 200)
            #expect(await client.next("message")?.channel == lobby, "the vip room's message no longer comes")
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(vip)&token=\(Minter.hs256(Minter.claims("bob", ["channels": [vip]])))", subprotocols: ["chat.v1"])
            try await v1.send(text: #"{"type":"refresh","token":"\#(Minter.hs256(Minter.claims("bob", ["channels": [lobby]])))"}"#)
            #expect(await closeCode(of: v1) == 4403)
            await client.disconnect()
        }
    }

    @Test func aTokenThatIsNoJWTIsRefusedWhereJWTsAreRead() async throws {
        try await withServer(broker: .memory, Self.signedIn()) { server in
            let sent = try await ChatHTTP.send(port: server.port, data: "x", channel: "c", headers: [("Authorization", "Bearer garbage")])
            #expect(sent.status == 401 && sent.body.hasPrefix("Invalid token: malformed: it is not a JWT"))
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=c&token=a.b.c.d").status == 401)
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?token=garbage", subprotocols: ["chat.v2"])
            #expect(await closeCode(of: socket) == 4401)
            // A refresh with nothing, or far too much, is answered and changes nothing.
            let client = try await V2Client.connect(server, query: "token=\(Minter.hs256(Minter.claims("ada")))")
            _ = await client.next("welcome")
            for token in ["", String(repeating: "x.", count: 5000)] {
                try await client.send(["type": "refresh", "token": token])
                #expect((await client.next("error")?["message"] as? String ?? "").hasPrefix("Invalid token: malformed"))
            }
            try await client.send(["type": "ping"])
            #expect(await client.next("pong") != nil)
            await client.disconnect()
        }
    }

    @Test func aJWTStandsInForAConnectToken() async throws {
        try await withServer(broker: .memory, Self.signedIn { $0.connectSecret = "connect-secret" }) { server in
            let channel = uniqueChannel()
            let client = try await V2Client.connect(server, query: "token=\(Minter.hs256(Minter.claims("ada")))")
            #expect(try await client.subscribedFrame(channel)?.channel == channel)
            let legacy = ConnectToken(channel: channel, expiry: Self.now + 60).signed(with: "connect-secret")
            let old = try await V2Client.connect(server, query: "token=\(legacy)")
            #expect(try await old.subscribedFrame(channel)?.channel == channel, "connect tokens still work this release")
            await client.disconnect()
            await old.disconnect()
        }
    }
}
