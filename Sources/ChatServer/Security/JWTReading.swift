// Imports only Foundation (and Chat, for ChannelName and SenderName, where it exists):
// scripts/fuzz.sh compiles this file into a libFuzzer target with those files.
import Foundation

#if canImport(Chat)
import Chat
#endif

/// What is checked of a JWT before its signature, and of its claims after.
enum JWTRules {
    /// The algorithms a token may be signed with.
    static let algorithms: Set<String> = ["HS256", "RS256", "ES256"]
    /// Seconds of clock difference allowed on `exp` and `nbf`.
    static let leeway: Int64 = 30
    /// Longest token read.
    static let maximumLength = 8192
}

/// The claims of a token that holds, checked and bounded.
struct CheckedClaims: Equatable {
    var subject: String
    var name: String?
    var rooms: RoomScope?
    var isModerator: Bool
    var expiry: Int64
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
        guard token.utf8.count <= JWTRules.maximumLength else { return .failure(.malformed("it is longer than \(JWTRules.maximumLength) bytes")) }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(.malformed("a JWT has three parts separated by dots")) }
        guard let headerBytes = Base64URL.decode(String(parts[0])), let header = try? JSONDecoder().decode(Header.self, from: Data(headerBytes)) else {
            return .failure(.malformed("its header is not base64url JSON"))
        }
        guard let algorithm = header.alg else { return .failure(.malformed("its header names no alg")) }
        if algorithm.lowercased() == "none" { return .failure(.unsigned) }
        guard JWTRules.algorithms.contains(algorithm) else { return .failure(.unsupportedAlgorithm(String(algorithm.unicodeScalars.prefix(20)))) }
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
    var iss: String?
    /// `aud`: one audience or several.
    var aud: [String]?

    enum CodingKeys: String, CodingKey { case sub, name, exp, nbf, channels, role, iss, aud }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sub = try container.decodeIfPresent(String.self, forKey: .sub)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        exp = try container.decodeIfPresent(Double.self, forKey: .exp)
        nbf = try container.decodeIfPresent(Double.self, forKey: .nbf)
        role = try container.decodeIfPresent(String.self, forKey: .role)
        iss = try container.decodeIfPresent(String.self, forKey: .iss)
        // One room, or one audience, may come as a string.
        if let one = try? container.decodeIfPresent(String.self, forKey: .channels) {
            channels = [one]
        } else {
            channels = try container.decodeIfPresent([String].self, forKey: .channels)
        }
        if let one = try? container.decodeIfPresent(String.self, forKey: .aud) {
            aud = [one]
        } else {
            aud = try container.decodeIfPresent([String].self, forKey: .aud)
        }
    }

    /// What the claims say, if they hold at `now`, for a login that issues as `issuer`
    /// tokens for `audience` (each checked only when given).
    func check(now: Int64, issuer: String? = nil, audience: String? = nil) -> Result<CheckedClaims, TokenRefusal> {
        if let issuer, iss != issuer { return .failure(.otherIssuer(iss.map { String($0.unicodeScalars.prefix(64)) })) }
        if let audience, !(aud ?? []).contains(audience) { return .failure(.otherAudience) }
        guard let sub, !sub.isEmpty else { return .failure(.malformed("it has no sub (the person it is for)")) }
        guard sub.utf8.count <= 255, !sub.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            return .failure(.malformed("its sub is longer than 255 bytes or holds control characters"))
        }
        // A sign-in that never ends could not be taken back: every token expires.
        guard let exp else { return .failure(.malformed("it has no exp: a sign-in token must expire")) }
        guard exp.isFinite, abs(exp) < 1e15 else { return .failure(.malformed("its exp is not a time")) }
        let expiry = Int64(exp.rounded(.down))
        if now > expiry + JWTRules.leeway { return .failure(.expired) }
        if let nbf {
            guard nbf.isFinite, abs(nbf) < 1e15 else { return .failure(.malformed("its nbf is not a time")) }
            if Int64(nbf.rounded(.up)) > now + JWTRules.leeway { return .failure(.notYetValid) }
        }
        if let name, let problem = SenderName.problem(with: name) { return .failure(.malformed("its name claim is refused: \(problem)")) }
        var rooms: RoomScope?
        if let channels {
            guard let scope = RoomScope(channels) else {
                return .failure(.malformed("its channels claim holds at most \(RoomScope.maximumEntries) room names or prefixes ending in *"))
            }
            rooms = scope
        }
        return .success(CheckedClaims(subject: sub, name: SenderName.normalized(name), rooms: rooms, isModerator: role == "moderator", expiry: expiry))
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
    /// `iss` is not `--jwt-issuer` (the claim, if any).
    case otherIssuer(String?)
    /// `aud` does not name `--jwt-audience`.
    case otherAudience
    /// `--require-login` and no token.
    case required

    var reason: String {
        switch self {
        case .malformed(let why): "malformed: \(why)"
        case .unsigned: "alg none is not accepted; tokens must be signed"
        case .unsupportedAlgorithm(let alg): "alg \(alg) is not accepted (HS256, RS256 and ES256 are)"
        case .noKeyFor(let alg): "it is signed with \(alg), and no key of this server is for \(alg)"
        case .unknownKey(let kid): "it names key '\(String(kid.unicodeScalars.prefix(64)))', which the server's key set does not hold"
        case .badSignature: "its signature does not match: it was altered or signed with another key"
        case .expired: "it has expired; sign in again"
        case .notYetValid: "it is not valid yet (nbf)"
        case .otherIssuer(let iss): "it was issued by \(iss.map { "'\($0)'" } ?? "no one named (no iss)"), not by this server's login (--jwt-issuer)"
        case .otherAudience: "it is not for this server: its aud does not name --jwt-audience"
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

/// The rooms of a token's `channels` claim: whole names, and prefixes written with a
/// trailing `*` (`support-*`; a lone `*` is every room).
struct RoomScope: Sendable, Equatable {
    var names: Set<String> = []
    var prefixes: [String] = []

    /// Most entries a claim may hold.
    static let maximumEntries = 100

    /// Reads a claim; `nil` for an entry that is no room name nor prefix.
    init?(_ entries: [String]) {
        guard entries.count <= Self.maximumEntries else { return nil }
        for entry in entries {
            if entry.hasSuffix("*") {
                let prefix = String(entry.dropLast())
                guard prefix.isEmpty || (try? ChannelName(validating: prefix)) != nil else { return nil }
                prefixes.append(prefix)
            } else {
                guard (try? ChannelName(validating: entry)) != nil else { return nil }
                names.insert(entry)
            }
        }
    }

    func allows(_ channel: ChannelName) -> Bool {
        names.contains(channel.rawValue) || prefixes.contains { channel.rawValue.hasPrefix($0) }
    }
}
