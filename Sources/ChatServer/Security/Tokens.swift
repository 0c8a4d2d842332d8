import Foundation

/// A signed, expiring, channel-scoped permission to open a socket (`--connect-secret`).
///
///     base64url("v1\n" + channel + "\n" + expiry) + "." + base64url(HMAC-SHA256(secret, that payload))
///
/// `channel` is empty for a token valid on every channel; `expiry` is Unix seconds.
/// Minted with `chatroom token`; checked on every `/wb/` upgrade.
public struct ConnectToken: Equatable, Sendable {
    /// The channel it opens, or `nil` for every channel.
    public var channel: String?
    /// Unix seconds after which it is refused.
    public var expiry: Int64

    public init(channel: String?, expiry: Int64) {
        self.channel = channel
        self.expiry = expiry
    }

    private var payload: [UInt8] { Array("v1\n\(channel ?? "")\n\(expiry)".utf8) }

    /// The token as text, signed with `secret`.
    public func signed(with secret: String) -> String {
        Base64URL.encode(payload) + "." + Base64URL.encode(HMACSHA256.mac(key: Array(secret.utf8), message: payload))
    }

    /// Why a token was refused, in words for the client.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case missing
        case malformed
        case badSignature
        case expired
        case otherChannel(String)

        public var description: String {
            switch self {
            case .missing: "This server needs a token to connect: add ?token=… (from the application that sent you here)."
            case .malformed: "The token is not one this server issues."
            case .badSignature: "The token's signature does not match: it was altered or signed with another secret."
            case .expired: "The token has expired: get a new one."
            case .otherChannel(let channel): "The token is for channel '\(String(channel.unicodeScalars.prefix(64)))', not this one."
            }
        }
    }

    /// Checks `text` for `channel` at `now` (Unix seconds); for a `nil` channel, only that
    /// it is signed and not expired (a chat.v2 socket, whose channels come later).
    public static func verify(_ text: String?, channel: String?, secret: String, now: Int64) -> Result<ConnectToken, Refusal> {
        guard let text, !text.isEmpty else { return .failure(.missing) }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = Base64URL.decode(String(parts[0])), let mac = Base64URL.decode(String(parts[1])) else {
            return .failure(.malformed)
        }
        // The signature first: nothing of an unsigned payload is trusted, not even its shape.
        guard HMACSHA256.constantTimeEqual(mac, HMACSHA256.mac(key: Array(secret.utf8), message: payload)) else {
            return .failure(.badSignature)
        }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] == "v1", let expiry = Int64(fields[2]) else { return .failure(.malformed) }
        let token = ConnectToken(channel: fields[1].isEmpty ? nil : String(fields[1]), expiry: expiry)
        guard now < expiry else { return .failure(.expired) }
        if let scoped = token.channel, let channel, scoped != channel { return .failure(.otherChannel(scoped)) }
        return .success(token)
    }
}
