import ChatClient
@testable import ChatServer
import Foundation
import Testing

@Suite("Trusted integrations (--api-token)")
struct TrustedIntegrationTests {
    @Test func aBackendWithTheAPITokenIsNotHeldToTheBrowsersPerAddressRates() async throws {
        // Rates that refill only after 100 s: what the test sees does not depend on its speed.
        try await withServer(broker: .memory, { configuration in
            configuration.apiToken = "backend-api-token"
            configuration.sendRate = RateLimit(rate: 0.01, burst: 2)
            configuration.historyRate = RateLimit(rate: 0.01, burst: 2)
        }) { server in
            let channel = uniqueChannel()
            let backend = [("Authorization", "Bearer backend-api-token")]
            for index in 0..<30 {
                let answer = try await ChatHTTP.send(port: server.port, data: "order \(index) shipped", channel: channel, name: "Shop", headers: backend)
                #expect(answer.status == 200, "\(index): \(answer.status) \(answer.body)")
            }
            for _ in 0..<10 {
                #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)", headers: backend).status == 200)
            }
            // A browser from the same address is still held to them, and so is a wrong token.
            var statuses: [Int] = []
            for _ in 0..<4 { statuses.append(try await ChatHTTP.send(port: server.port, data: "hi", channel: channel).status) }
            #expect(statuses == [200, 200, 429, 429])
            let wrong = try await ChatHTTP.send(port: server.port, data: "x", channel: channel, headers: [("Authorization", "Bearer guess")])
            #expect(wrong.status == 429)
            let kept = try await history(server.port, channel, headers: backend)
            #expect(kept.filter { $0["name"] as? String == "Shop" }.count == 30, "a trusted integration sets the name")
        }
    }

    @Test func theAPITokenStandsInForThePublishToken() async throws {
        try await withServer(broker: .memory, { configuration in
            configuration.apiToken = "backend-api-token"
            configuration.publishToken = "every-publisher-needs-this"
        }) { server in
            let trusted = try await ChatHTTP.send(port: server.port, data: "x", channel: "c", headers: [("Authorization", "Bearer backend-api-token")])
            let anonymous = try await ChatHTTP.send(port: server.port, data: "x", channel: "c")
            #expect(trusted.status == 200 && anonymous.status == 401)
        }
    }
}
