// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// The `Sec-WebSocket-Key` of an upgrade (RFC 6455 §4.1): base64 of 16 random bytes.
enum WebSocketKey {
    /// Whether `key` is base64 of exactly 16 bytes: 22 base64 characters, then `==`.
    static func isValid(_ key: some StringProtocol) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        func isBase64(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "+"), UInt8(ascii: "/"):
                true
            default: false
            }
        }
        // The 22nd character carries the 16th byte's last 2 bits and 4 zero bits.
        return bytes[..<22].allSatisfy(isBase64) && "AQgw".utf8.contains(bytes[21])
    }
}
