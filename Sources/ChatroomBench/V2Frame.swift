import NIOCore

/// The top-level members of one chat.v2 server frame that the load generator acts on,
/// read in place from the payload: byte ranges and numbers, nothing copied or allocated.
///
/// A small JSON scanner, not a decoder: it walks the object's members in any order,
/// skips values it does not need (`data`, `members`, nested objects) with strings and
/// escapes respected, and gives up (`nil`) on anything that is not a JSON object.
struct V2Frame {
    /// The frame's `type`.
    enum Kind: Equatable {
        case ack, nack, message, subscribed, unsubscribed, refused, reset, gap, error, pong
        case members, presence, join, leave
        case other
    }

    var kind = Kind.other
    /// `id` (string contents, as sent: the load generator's ids need no escapes).
    var id: Range<Int>?
    /// `channel` (string contents).
    var channel: Range<Int>?
    /// `epoch` (string contents); `nil` when absent or `null`.
    var epoch: Range<Int>?
    /// `offset` (`message`, `ack`, `subscribed`).
    var offset: UInt64?
    /// `from` and `to` of a `gap`.
    var from: UInt64?
    var to: UInt64?
    /// `status` of a `nack`, `code` of a `refused`.
    var status: Int?
    var code: Int?
    /// `message` of an `error`, `refused` or `nack` (string contents).
    var text: Range<Int>?

    /// Reads `bytes`, one frame's payload.
    init?(_ bytes: UnsafeRawBufferPointer) {
        var scanner = JSONScanner(bytes: bytes)
        guard scanner.skipSpace(), scanner.take(UInt8(ascii: "{")) else { return nil }
        if scanner.skipSpace(), scanner.take(UInt8(ascii: "}")) { return }
        while true {
            guard scanner.skipSpace(), let key = scanner.string(), scanner.skipSpace(), scanner.take(UInt8(ascii: ":")), scanner.skipSpace() else { return nil }
            switch scanner.key(key) {
            case .type:
                guard let value = scanner.string() else { return nil }
                kind = Self.kind(of: scanner.slice(value))
            case .id: id = scanner.string()
            case .channel: channel = scanner.string()
            case .epoch:
                if scanner.peek == UInt8(ascii: "\"") { epoch = scanner.string() } else if !scanner.skipValue() { return nil }
            case .offset: offset = scanner.unsigned()
            case .from: from = scanner.unsigned()
            case .to: to = scanner.unsigned()
            case .status: status = scanner.unsigned().map(Int.init)
            case .code: code = scanner.unsigned().map(Int.init)
            case .message:
                if scanner.peek == UInt8(ascii: "\"") { text = scanner.string() } else if !scanner.skipValue() { return nil }
            default:
                guard scanner.skipValue() else { return nil }
            }
            guard scanner.skipSpace() else { return nil }
            if scanner.take(UInt8(ascii: ",")) { continue }
            guard scanner.take(UInt8(ascii: "}")) else { return nil }
            return
        }
    }

    private static func kind(of name: UnsafeRawBufferPointer) -> Kind {
        switch name.count {
        case 3: return equals(name, "ack") ? .ack : equals(name, "gap") ? .gap : .other
        case 4:
            if equals(name, "nack") { return .nack }
            if equals(name, "pong") { return .pong }
            if equals(name, "join") { return .join }
            return .other
        case 5:
            if equals(name, "reset") { return .reset }
            if equals(name, "error") { return .error }
            if equals(name, "leave") { return .leave }
            return .other
        case 7:
            if equals(name, "message") { return .message }
            if equals(name, "refused") { return .refused }
            if equals(name, "members") { return .members }
            return .other
        case 8: return equals(name, "presence") ? .presence : .other
        case 10: return equals(name, "subscribed") ? .subscribed : .other
        case 12: return equals(name, "unsubscribed") ? .unsubscribed : .other
        default: return .other
        }
    }

    static func equals(_ bytes: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        let other = UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
        return bytes.elementsEqual(other)
    }
}

/// A cursor over JSON bytes for ``V2Frame``.
struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }

    /// The members ``V2Frame`` reads.
    enum Key { case type, id, channel, epoch, offset, from, to, status, code, message, other }

    private static let keys: [(StaticString, Key)] = [
        ("type", .type), ("id", .id), ("channel", .channel), ("epoch", .epoch), ("offset", .offset), ("from", .from), ("to", .to),
        ("status", .status), ("code", .code), ("message", .message),
    ]

    /// Which of the members ``V2Frame`` reads the key at `range` names.
    func key(_ range: Range<Int>) -> Key {
        let key = slice(range)
        for (name, value) in Self.keys where V2Frame.equals(key, name) { return value }
        return .other
    }

    /// Skips white space; false at the end of the input.
    mutating func skipSpace() -> Bool {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return true
            }
        }
        return false
    }

    mutating func take(_ byte: UInt8) -> Bool {
        guard peek == byte else { return false }
        index += 1
        return true
    }

    /// A string's contents (escapes left as they are), the cursor past its closing quote.
    mutating func string() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""):
                defer { index += 1 }
                return start..<index
            default: index += 1
            }
        }
        return nil
    }

    /// A non-negative integer; `nil` (cursor past the value) for anything else.
    mutating func unsigned() -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        while let byte = peek, byte >= 48, byte <= 57 {
            value = value &* 10 &+ UInt64(byte - 48)
            digits += 1
            index += 1
        }
        if digits == 0 {
            _ = skipValue()
            return nil
        }
        return value
    }

    /// Skips one value of any kind.
    mutating func skipValue() -> Bool {
        guard let first = peek else { return false }
        switch first {
        case UInt8(ascii: "\""): return string() != nil
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while let byte = peek {
                switch byte {
                case UInt8(ascii: "\""):
                    guard string() != nil else { return false }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 {
                        index += 1
                        return true
                    }
                default: break
                }
                index += 1
            }
            return false
        default:
            // A number, true, false or null: up to the next delimiter.
            while let byte = peek, byte != UInt8(ascii: ","), byte != UInt8(ascii: "}"), byte != UInt8(ascii: "]"), byte != 0x20 {
                index += 1
            }
            return true
        }
    }
}
