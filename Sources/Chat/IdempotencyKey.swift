// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// The id a client gives a message it sends, so that sending it again is safe: the
/// `Idempotency-Key` header of `POST /send/` (the IETF httpapi draft's name).
///
/// 1–64 characters of `A–Z a–z 0–9 _ -`, chosen by the client (a UUID fits). The same
/// key from the same sender to the same channel within `--dedupe-window` is published
/// once; a repeat is answered like the first.
public enum IdempotencyKey {
    /// Longest key.
    public static let maximumLength = 64

    /// Whether `text` is a key a client may send.
    public static func isValid(_ text: some StringProtocol) -> Bool {
        (1...maximumLength).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "_"), UInt8(ascii: "-"):
                    true
                default: false
                }
            }
    }
}
