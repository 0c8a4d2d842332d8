import Chat
import Foundation
import JWTKit

/// Checks the JWTs (RFC 7519) of the site's login against the keys the server was given:
/// `--jwt-secret` (HS256), `--jwt-public-key` (RS256 or ES256, PEM) and `--jwks-url`.
///
/// The token's header is read here, not trusted to a library: `alg` must be one this
/// server accepts *and* the one the key was made for, so neither `alg: none` nor an
/// HS256 token "signed" with an RSA public key as its secret gets through. jwt-kit only
/// computes signatures.
final class JWTVerifier: Sendable {
    /// One key and the algorithm it was made for.
    struct Key: Sendable {
        var algorithm: any JWTAlgorithm
        /// Its `kid` (keys from a JWKS have one).
        var id: String?
        var name: String { algorithm.name }
    }

    /// What a token must say besides its signature.
    struct Expectations: Sendable {
        /// `--jwt-issuer`: the `iss` of the site's login.
        var issuer: String?
        /// `--jwt-audience`: a name `aud` must hold (this server's, at the login).
        var audience: String?
    }

    private let keys: [Key]
    private let jwks: JWKSSource?
    private let expectations: Expectations
    /// Gives each `sub` its identity.
    private let identities: Identities

    init(keys: [Key], jwks: JWKSSource?, expectations: Expectations = .init(), identities: Identities) {
        self.keys = keys
        self.jwks = jwks
        self.expectations = expectations
        self.identities = identities
    }

    /// The verifier of the configured keys, or `nil` when none is configured.
    /// - Throws: ``ConfigurationError`` for a secret too short or a key file that is no key.
    static func make(
        secret: String?, publicKeyFiles: [String], jwksURL: String?, expectations: Expectations = .init(), identities: Identities
    ) async throws -> JWTVerifier? {
        var keys: [Key] = []
        if let secret {
            guard secret.utf8.count >= 32 else {
                throw ConfigurationError("--jwt-secret must be at least 32 bytes (256 bits, RFC 7518 §3.2); make one with `openssl rand -base64 32`.")
            }
            keys.append(try await key(JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)))
        }
        for file in publicKeyFiles {
            let pem: String
            do {
                pem = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigurationError("--jwt-public-key \(file): cannot read it (\(error.localizedDescription)).")
            }
            keys.append(try await publicKey(pem: pem, file: file))
        }
        let jwks = jwksURL.map { JWKSSource(url: $0) }
        guard !keys.isEmpty || jwks != nil else { return nil }
        return JWTVerifier(keys: keys, jwks: jwks, expectations: expectations, identities: identities)
    }

    /// An RS256 or ES256 public key (or a certificate holding one) in PEM.
    private static func publicKey(pem: String, file: String) async throws -> Key {
        let certificate = pem.contains("BEGIN CERTIFICATE")
        if let rsa = try? (certificate ? Insecure.RSA.PublicKey(certificatePEM: pem) : Insecure.RSA.PublicKey(pem: pem)) {
            return try await key(JWTKeyCollection().add(rsa: rsa, digestAlgorithm: .sha256))
        }
        if let ecdsa = try? (certificate ? ES256PublicKey(certificate: pem) : ES256PublicKey(pem: pem)) {
            return try await key(JWTKeyCollection().add(ecdsa: ecdsa))
        }
        throw ConfigurationError("--jwt-public-key \(file): not an RSA or P-256 public key (or certificate) in PEM.")
    }

    private static func key(_ collection: JWTKeyCollection) async throws -> Key {
        Key(algorithm: try await collection.getKey(), id: nil)
    }

    /// Whether `text` has the shape of a JWT (three base64url parts) rather than a
    /// `--connect-secret` token or a publish token.
    static func looksLikeJWT(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0].count > 0 && parts[1].count > 0
    }

    /// Checks a token at `now` (Unix seconds).
    func verify(_ token: String, now: Int64) async -> Result<SignIn, TokenRefusal> {
        let read: ReadToken
        switch ReadToken.parse(token) {
        case .success(let parsed): read = parsed
        case .failure(let refusal): return .failure(refusal)
        }
        var candidates = keys.filter { $0.name == read.algorithm && (read.keyID == nil || $0.id == nil || $0.id == read.keyID) }
        if let jwks {
            var known = await jwks.keys(lookingFor: false)
            // A key named that the set does not hold: the login may have rotated its keys.
            if let kid = read.keyID, !known.contains(where: { $0.id == kid }) { known = await jwks.keys(lookingFor: true) }
            candidates += known.filter { $0.name == read.algorithm && (read.keyID == nil || $0.id == read.keyID) }
        }
        guard !candidates.isEmpty else {
            let anyKey = keys.contains { $0.name == read.algorithm }
            if let kid = read.keyID, jwks != nil, !anyKey { return .failure(.unknownKey(kid)) }
            return .failure(.noKeyFor(read.algorithm))
        }
        guard candidates.contains(where: { (try? $0.algorithm.verify(read.signature, signs: read.signedPart)) == true }) else {
            return .failure(.badSignature)
        }
        let identities = self.identities
        return read.claims.check(now: now, issuer: expectations.issuer, audience: expectations.audience).map { SignIn($0, identities: identities) }
    }
}
