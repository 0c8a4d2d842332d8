import Chat
import Foundation

/// An HS256 JWT of the claims the server reads, signed with `--jwt-secret`: what
/// `chatroom token --sub …` prints, and what a site's backend makes with any JWT library.
public struct SignInToken: Sendable {
    public var subject: String
    public var name: String?
    public var moderator = false
    /// Room names and prefixes ending in `*`; `nil`: every room.
    public var channels: [String]?
    /// Unix seconds.
    public var expiry: Int64
    public var notBefore: Int64?

    public init(subject: String, name: String? = nil, moderator: Bool = false, channels: [String]? = nil, expiry: Int64, notBefore: Int64? = nil) {
        self.subject = subject
        self.name = name
        self.moderator = moderator
        self.channels = channels
        self.expiry = expiry
        self.notBefore = notBefore
    }

    /// Why the claims would be refused by a server, or `nil` when they are fine.
    public var problem: String? {
        if subject.isEmpty || subject.utf8.count > 255 { return "--sub must be 1–255 bytes" }
        if let name, let problem = SenderName.problem(with: name) { return "--name: \(problem)" }
        if let channels, RoomScope(channels) == nil { return "--channels must be at most \(RoomScope.maximumEntries) room names or prefixes ending in *" }
        return nil
    }

    /// The token, signed with `secret`.
    public func signed(with secret: String) -> String {
        var claims: [String: Any] = ["sub": subject, "exp": expiry, "iat": Int64(Date().timeIntervalSince1970)]
        if let name { claims["name"] = name }
        if moderator { claims["role"] = "moderator" }
        if let channels { claims["channels"] = channels }
        if let notBefore { claims["nbf"] = notBefore }
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Base64URL.encode(Array((try? JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys])) ?? Data()))
        let signature = HMACSHA256.mac(key: Array(secret.utf8), message: Array("\(header).\(payload)".utf8))
        return "\(header).\(payload).\(Base64URL.encode(signature))"
    }
}
