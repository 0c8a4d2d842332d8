import Crypto

/// HMAC-SHA256, constant-time comparison and random bytes, from swift-crypto (BoringSSL
/// inside, nothing from the system): no call here can fail, so nothing here traps.
enum HMACSHA256 {
    /// The MAC of `message` under `key`: 32 bytes.
    static func mac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// Whether `a` and `b` are equal, in time that depends only on their lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// Whether a presented token is the expected secret, in a time that tells nothing of
    /// either, their lengths included: their SHA-256 digests are compared.
    static func sameSecret(_ presented: String, _ expected: String) -> Bool {
        constantTimeEqual(Array(SHA256.hash(data: Array(presented.utf8))), Array(SHA256.hash(data: Array(expected.utf8))))
    }

    /// `count` random bytes from the system's secure generator (`getrandom` on Linux).
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}
