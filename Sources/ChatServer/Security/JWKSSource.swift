import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The public keys a login publishes (`--jwks-url`, RFC 7517): fetched when first
/// needed, kept, and fetched again when a token names a key the set does not hold (the
/// login rotated its keys) — at most once every ``refreshInterval``, so that tokens with
/// made-up `kid`s cannot make the server hammer the login.
final class JWKSSource: Sendable {
    let url: String
    /// Least time between two fetches.
    static let refreshInterval: TimeAmount = .seconds(10)
    /// Most keys kept from one set, and most bytes read of it.
    static let maximumKeys = 100
    static let maximumBytes = 1 << 20

    private struct State {
        var keys: [JWTVerifier.Key] = []
        var fetchedAt: NIODeadline?
        var fetch: Task<[JWTVerifier.Key], Never>?
    }

    private let state = NIOLockedValueBox(State())
    private let logger = Logger(label: "chatroom.jwks")

    init(url: String) {
        self.url = url
    }

    /// The keys: those kept, or (when none were fetched yet, or `refreshing` and the last
    /// fetch is old enough) a fresh set. A fetch that fails keeps the old keys.
    func keys(refreshing: Bool) async -> [JWTVerifier.Key] {
        let next: (keys: [JWTVerifier.Key], fetch: Task<[JWTVerifier.Key], Never>?) = state.withLockedValue { state in
            if let fetch = state.fetch { return ([], fetch) }
            let due = state.fetchedAt.map { refreshing && NIODeadline.now() - $0 >= Self.refreshInterval } ?? true
            guard due else { return (state.keys, nil) }
            let fetch = Task { await self.fetched() }
            state.fetch = fetch
            return ([], fetch)
        }
        guard let fetch = next.fetch else { return next.keys }
        return await fetch.value
    }

    private func fetched() async -> [JWTVerifier.Key] {
        let result: [JWTVerifier.Key]?
        do {
            result = try await Self.fetch(url)
        } catch {
            logger.warning("Could not fetch the login's keys; tokens signed with keys not held yet are refused", metadata: ["url": "\(url)", "error": "\(error)"])
            result = nil
        }
        return state.withLockedValue { state in
            state.fetch = nil
            state.fetchedAt = .now()
            if let result { state.keys = result }
            return state.keys
        }
    }

    /// Fetches and reads a key set: RSA keys as RS256 (or their own `alg`), P-256 keys as
    /// ES256; symmetric keys and keys without a `kid` are skipped.
    static func fetch(_ url: String) async throws -> [JWTVerifier.Key] {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        guard response.status == .ok else { throw ConfigurationError("the key set answered \(response.status.code)") }
        let body = try await response.body.collect(upTo: maximumBytes)
        let set = try JSONDecoder().decode(JWKS.self, from: Data(body.readableBytesView))
        var keys: [JWTVerifier.Key] = []
        for jwk in set.keys.prefix(maximumKeys) {
            guard let kid = jwk.keyIdentifier else { continue }
            let algorithm: String
            switch jwk.keyType {
            case .rsa: algorithm = jwk.algorithm?.rawValue ?? "RS256"
            case .ecdsa: algorithm = jwk.algorithm?.rawValue ?? "ES256"
            default: continue
            }
            guard JWTRules.algorithms.contains(algorithm),
                let key = try? await JWTKeyCollection().add(jwk: jwk).getKey(for: kid, alg: algorithm), key.name == algorithm
            else { continue }
            keys.append(JWTVerifier.Key(algorithm: key, id: kid.string))
        }
        return keys
    }
}
