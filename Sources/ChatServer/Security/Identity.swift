import Chat
import NIOCore

/// Who a browser is, without accounts: the `uid` cookie the server issues.
///
///     uid=<id>.<base64url(HMAC-SHA256(secret, "uid\n" + id))>
///
/// `id` is 11 random bytes (88 bits) in base64url: 15 characters, short enough for Swift
/// to keep inside the string value, with no allocation per socket. Every instance shares the
/// secret (`--identity-secret`, or one kept in the broker), so any instance recognises
/// any instance's cookies. A cookie whose signature does not match is ignored — the
/// browser gets a new identity — and never trusted. The nickname is only a display name;
/// the id is who someone is (presence, member caps, one-to-one rooms).
struct Identities: Sendable {
    /// The cookie's name.
    static let cookieName = "uid"
    private let key: [UInt8]

    init(secret: String) {
        key = Array(secret.utf8)
    }

    /// A new identity's cookie value.
    func mint() -> (id: String, cookie: String) {
        let id = Base64URL.encode(HMACSHA256.randomBytes(11))
        return (id, id + "." + signature(of: id))
    }

    /// The id in a cookie value, when its signature is right.
    func verify(_ cookie: String?) -> String? {
        guard let cookie, cookie.utf8.count <= 128, let dot = cookie.firstIndex(of: ".") else { return nil }
        let id = String(cookie[..<dot])
        guard Self.isID(id), let given = Base64URL.decode(String(cookie[cookie.index(after: dot)...])) else { return nil }
        return HMACSHA256.constantTimeEqual(given, mac(of: id)) ? id : nil
    }

    /// The verified id in a request's `Cookie` header values, if any.
    func identity(cookies: [String]) -> String? {
        verify(CookieHeader.value(Self.cookieName, in: cookies))
    }

    /// The identity of a person the site signed in, from their token's `sub`: the first
    /// 15 characters of base64url(HMAC-SHA256(secret, "sub\n" + sub)). Keyed with the
    /// identity secret, so that an id seen in a room does not give away the site's user id
    /// (a number or an e-mail address would be found again by hashing guesses).
    func id(ofSubject subject: String) -> String {
        String(Base64URL.encode(HMACSHA256.mac(key: key, message: Array("sub\n\(subject)".utf8))).prefix(15))
    }

    /// The `Set-Cookie` value that gives a browser `cookie` for a year.
    static func setCookie(_ cookie: String) -> String {
        "\(cookieName)=\(cookie); Max-Age=31536000; Path=/; SameSite=Lax"
    }

    /// Whether `text` has the shape of an id: 15 base64url characters.
    static func isID(_ text: some StringProtocol) -> Bool {
        text.utf8.count == 15 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 45 || $0 == 95 }
    }

    private func mac(of id: String) -> [UInt8] {
        HMACSHA256.mac(key: key, message: Array("uid\n\(id)".utf8))
    }

    private func signature(of id: String) -> String {
        Base64URL.encode(mac(of: id))
    }
}
