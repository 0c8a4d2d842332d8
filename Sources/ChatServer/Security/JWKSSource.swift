import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The public keys a login publishes (`--jwks-url`, RFC 7517): fetched when first
/// needed and kept; fetched again when a token names a key the set does not hold (the
/// login rotated its keys), and when the set is older than its `Cache-Control: max-age`
/// (10 minutes without one, between 1 minute and 1 hour), so that a key the login took
/// back stops counting.
///
/// A fetch takes at most ``fetchTimeout``, body included, and never holds up a token
/// whose key is kept: only a token that names a key the set does not hold (or the first,
/// when no set was fetched yet) waits for one. Fetches are at least ``refreshInterval``
/// apart, so that made-up `kid`s cannot make the server hammer the login.
final class JWKSSource: Sendable {
    let url: String
    /// Least time between two fetches.
    static let refreshInterval: TimeAmount = .seconds(10)
    /// Longest a fetch may take, from connecting to the last byte.
    static let fetchTimeout: Duration = .seconds(5)
    /// How long a set is kept without a `max-age`, and the bounds of one.
    static let defaultMaxAge: TimeAmount = .minutes(10)
    static let maxAgeBounds: ClosedRange<Int64> = 60...3600
    /// Most keys kept from one set, and most bytes read of it.
    static let maximumKeys = 100
    static let maximumBytes = 1 << 20

    private struct State {
        var keys: [JWTVerifier.Key] = []
        /// When the last fetch ended (well or not).
        var fetchedAt: NIODeadline?
        var maxAge = JWKSSource.defaultMaxAge
        var fetch: Task<[JWTVerifier.Key], Never>?
    }

    private let state = NIOLockedValueBox(State())
    private let logger = Logger(label: "chatroom.jwks")

    init(url: String) {
        self.url = url
    }

    /// The keys to check a token with. `lookingFor`: the token names a key that the kept
    /// set may not hold, so a fetch that is due is waited for.
    func keys(lookingFor: Bool) async -> [JWTVerifier.Key] {
        let (kept, fetch): ([JWTVerifier.Key], Task<[JWTVerifier.Key], Never>?) = state.withLockedValue { state in
            let now = NIODeadline.now()
            let mayFetch = state.fetchedAt.map { now - $0 >= Self.refreshInterval } ?? true
            let stale = state.fetchedAt.map { now - $0 >= state.maxAge } ?? true
            if state.fetch == nil, mayFetch, lookingFor || stale || state.keys.isEmpty {
                state.fetch = Task { await self.fetched() }
            }
            // Kept keys answer at once, whatever a fetch in flight brings.
            guard lookingFor || state.keys.isEmpty else { return (state.keys, nil) }
            return (state.keys, state.fetch)
        }
        guard let fetch else { return kept }
        return await fetch.value
    }

    private func fetched() async -> [JWTVerifier.Key] {
        var fresh: (keys: [JWTVerifier.Key], maxAge: TimeAmount?)?
        do {
            fresh = try await Self.fetch(url)
        } catch {
            logger.warning(
                "Could not fetch the login's keys; tokens signed with keys not held yet are refused", metadata: ["url": "\(url)", "error": "\(error)"]
            )
        }
        return state.withLockedValue { state in
            state.fetch = nil
            state.fetchedAt = .now()
            if let fresh {
                state.keys = fresh.keys
                state.maxAge = fresh.maxAge ?? Self.defaultMaxAge
            }
            return state.keys
        }
    }

    struct FetchError: Error, CustomStringConvertible {
        var description: String
    }

    /// Fetches a set within ``fetchTimeout``: the download is cancelled at the deadline,
    /// and the answer does not wait for it to notice.
    static func fetch(_ url: String) async throws -> (keys: [JWTVerifier.Key], maxAge: TimeAmount?) {
        let answered = NIOLockedValueBox(false)
        return try await withCheckedThrowingContinuation { continuation in
            @Sendable func answer(_ result: Result<(keys: [JWTVerifier.Key], maxAge: TimeAmount?), any Error>) {
                guard answered.withLockedValue({ done in defer { done = true }; return !done }) else { return }
                continuation.resume(with: result)
            }
            let download = Task {
                do {
                    answer(.success(try await Self.download(url)))
                } catch {
                    answer(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: fetchTimeout)
                download.cancel()
                answer(.failure(FetchError(description: "no complete answer within \(fetchTimeout)")))
            }
        }
    }

    private static func download(_ url: String) async throws -> (keys: [JWTVerifier.Key], maxAge: TimeAmount?) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        guard response.status == .ok else { throw FetchError(description: "the key set answered \(response.status.code)") }
        let body = try await response.body.collect(upTo: maximumBytes)
        return (try await keys(in: Data(body.readableBytesView)), maxAge(response.headers["cache-control"]))
    }

    /// The keys of a set: RSA keys as RS256 (or their own `alg`), P-256 keys as ES256;
    /// each read on its own, so that one this server cannot use (symmetric, for
    /// encryption, of another curve, without a `kid`) is skipped rather than spoiling the set.
    static func keys(in json: Data) async throws -> [JWTVerifier.Key] {
        guard let object = try JSONSerialization.jsonObject(with: json) as? [String: Any], let entries = object["keys"] as? [Any] else {
            throw FetchError(description: "the key set is not a JSON object with \"keys\"")
        }
        var keys: [JWTVerifier.Key] = []
        for entry in entries.prefix(maximumKeys) {
            guard let fields = entry as? [String: Any], (fields["use"] as? String).map({ $0 == "sig" }) ?? true,
                let data = try? JSONSerialization.data(withJSONObject: fields), let jwk = try? JSONDecoder().decode(JWK.self, from: data),
                let kid = jwk.keyIdentifier
            else { continue }
            let algorithm: String
            switch jwk.keyType {
            case .rsa: algorithm = jwk.algorithm?.rawValue ?? "RS256"
            case .ecdsa where jwk.curve?.rawValue == "P-256": algorithm = jwk.algorithm?.rawValue ?? "ES256"
            default: continue
            }
            guard JWTRules.algorithms.contains(algorithm) else { continue }
            // A JWK's algorithm comes from the collection: its name is checked against the one asked.
            guard let key = try? await JWTKeyCollection().add(jwk: jwk).getKey(for: kid, alg: algorithm), key.name == algorithm else { continue }
            keys.append(JWTVerifier.Key(algorithm: key, id: kid.string))
        }
        return keys
    }

    /// `max-age` of a `Cache-Control` header, within ``maxAgeBounds``.
    static func maxAge(_ values: [String]) -> TimeAmount? {
        for directive in values.flatMap({ $0.split(separator: ",") }) {
            let parts = directive.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "max-age", let seconds = Int64(parts[1]) else { continue }
            return .seconds(min(max(seconds, maxAgeBounds.lowerBound), maxAgeBounds.upperBound))
        }
        return nil
    }
}
