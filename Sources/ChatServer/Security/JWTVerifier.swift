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

    /// The algorithms a token may be signed with.
    static let algorithms: Set<String> = ["HS256", "RS256", "ES256"]
    /// Seconds of clock difference allowed on `exp` and `nbf`.
    static let leeway: Int64 = 30
    /// Longest token read.
    static let maximumLength = 8192

    private let keys: [Key]
    private let jwks: JWKSSource?

    init(keys: [Key], jwks: JWKSSource?) {
        self.keys = keys
        self.jwks = jwks
    }

    /// The verifier of the configured keys, or `nil` when none is configured.
    /// - Throws: ``ConfigurationError`` for a secret too short or a key file that is no key.
    static func make(secret: String?, publicKeyFiles: [String], jwksURL: String?) async throws -> JWTVerifier? {
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
        return JWTVerifier(keys: keys, jwks: jwks)
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
            var known = await jwks.keys(refreshing: false)
            // A key named that the set does not hold: the login may have rotated its keys.
            if let kid = read.keyID, !known.contains(where: { $0.id == kid }) { known = await jwks.keys(refreshing: true) }
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
        return read.claims.signIn(now: now)
    }
}

/// A JWT's parts, read but not yet verified.
struct ReadToken {
    var algorithm: String
    var keyID: String?
    var signedPart: [UInt8]
    var signature: [UInt8]
    var claims: TokenClaims

    private struct Header: Decodable {
        var alg: String?
        var kid: String?
        var crit: [String]?
    }

    static func parse(_ token: String) -> Result<ReadToken, TokenRefusal> {
        guard token.utf8.count <= JWTVerifier.maximumLength else { return .failure(.malformed("it is longer than \(JWTVerifier.maximumLength) bytes")) }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(.malformed("a JWT has three parts separated by dots")) }
        guard let headerBytes = Base64URL.decode(String(parts[0])), let header = try? JSONDecoder().decode(Header.self, from: Data(headerBytes)) else {
            return .failure(.malformed("its header is not base64url JSON"))
        }
        guard let algorithm = header.alg else { return .failure(.malformed("its header names no alg")) }
        if algorithm.lowercased() == "none" { return .failure(.unsigned) }
        guard JWTVerifier.algorithms.contains(algorithm) else { return .failure(.unsupportedAlgorithm(String(algorithm.unicodeScalars.prefix(20)))) }
        if let critical = header.crit, !critical.isEmpty {
            return .failure(.malformed("its header marks fields this server does not know as critical (crit)"))
        }
        guard let payload = Base64URL.decode(String(parts[1])) else { return .failure(.malformed("its payload is not base64url")) }
        guard let signature = Base64URL.decode(String(parts[2])), !signature.isEmpty else { return .failure(.malformed("its signature is not base64url")) }
        let claims: TokenClaims
        do {
            claims = try JSONDecoder().decode(TokenClaims.self, from: Data(payload))
        } catch {
            return .failure(.malformed("its claims are not a JSON object of the expected types"))
        }
        let kid = header.kid.map { String($0.unicodeScalars.prefix(128)) }
        return .success(ReadToken(algorithm: algorithm, keyID: kid, signedPart: Array("\(parts[0]).\(parts[1])".utf8), signature: signature, claims: claims))
    }
}

/// The claims the server reads; others are ignored.
struct TokenClaims: Decodable {
    var sub: String?
    var name: String?
    var exp: Double?
    var nbf: Double?
    var channels: [String]?
    var role: String?

    enum CodingKeys: String, CodingKey { case sub, name, exp, nbf, channels, role }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sub = try container.decodeIfPresent(String.self, forKey: .sub)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        exp = try container.decodeIfPresent(Double.self, forKey: .exp)
        nbf = try container.decodeIfPresent(Double.self, forKey: .nbf)
        role = try container.decodeIfPresent(String.self, forKey: .role)
        // One room may come as a string.
        if let one = try? container.decodeIfPresent(String.self, forKey: .channels) {
            channels = [one]
        } else {
            channels = try container.decodeIfPresent([String].self, forKey: .channels)
        }
    }

    /// The person, if the claims hold at `now`.
    func signIn(now: Int64) -> Result<SignIn, TokenRefusal> {
        guard let sub, !sub.isEmpty else { return .failure(.malformed("it has no sub (the person it is for)")) }
        guard sub.utf8.count <= 255, !sub.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            return .failure(.malformed("its sub is longer than 255 bytes or holds control characters"))
        }
        var expiry: Int64?
        if let exp {
            guard exp.isFinite, abs(exp) < 1e15 else { return .failure(.malformed("its exp is not a time")) }
            expiry = Int64(exp.rounded(.down))
            if now > expiry! + JWTVerifier.leeway { return .failure(.expired) }
        }
        if let nbf {
            guard nbf.isFinite, abs(nbf) < 1e15 else { return .failure(.malformed("its nbf is not a time")) }
            if Int64(nbf.rounded(.up)) > now + JWTVerifier.leeway { return .failure(.notYetValid) }
        }
        if let name, let problem = SenderName.problem(with: name) { return .failure(.malformed("its name claim is refused: \(problem)")) }
        var rooms: RoomScope?
        if let channels {
            guard let scope = RoomScope(channels) else {
                return .failure(.malformed("its channels claim holds at most \(RoomScope.maximumEntries) room names or prefixes ending in *"))
            }
            rooms = scope
        }
        return .success(
            SignIn(
                identity: SignIn.identity(ofSubject: sub), subject: sub, name: SenderName.normalized(name), rooms: rooms, isModerator: role == "moderator",
                expiry: expiry
            )
        )
    }
}

/// Why a token is refused: `401 Invalid token: <reason>.` (close 4401 on sockets).
enum TokenRefusal: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case unsigned
    case unsupportedAlgorithm(String)
    case noKeyFor(String)
    case unknownKey(String)
    case badSignature
    case expired
    case notYetValid
    /// `--require-login` and no token.
    case required

    var reason: String {
        switch self {
        case .malformed(let why): "malformed: \(why)"
        case .unsigned: "alg none is not accepted; tokens must be signed"
        case .unsupportedAlgorithm(let alg): "alg \(alg) is not accepted (HS256, RS256 and ES256 are)"
        case .noKeyFor(let alg): "it is signed with \(alg), and no key of this server is for \(alg)"
        case .unknownKey(let kid): "it names key '\(kid.unicodeScalars.prefix(64))', which the server's key set does not hold"
        case .badSignature: "its signature does not match: it was altered or signed with another key"
        case .expired: "it has expired; sign in again"
        case .notYetValid: "it is not valid yet (nbf)"
        case .required: "sign-in required"
        }
    }

    /// The words a client is answered with.
    var description: String {
        switch self {
        case .required: "This server needs you to sign in: open the chat from the site's login (a link with ?token=…), or send its token."
        case .expired: "Token expired: sign in again (or refresh the token)."
        default: "Invalid token: \(reason)."
        }
    }

    /// The reason counted in `chatroom_refusals_total`.
    var metric: String { self == .required ? "login_required" : "unauthorized" }
}
