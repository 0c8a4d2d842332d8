// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// Why a form (a urlencoded or multipart body, or a query string) was refused.
enum FormError: Error, Equatable {
    /// More fields than ``FormData/maximumFields``.
    case tooManyFields
    /// A field's name or value is not valid UTF-8 (raw, or after `%XX` decoding).
    case notUTF8
    /// A `%` not followed by two hexadecimal digits.
    case badEscape

    /// The refusal's words, for a person.
    var message: String {
        switch self {
        case .tooManyFields: "The form has more than \(FormData.maximumFields) fields."
        case .notUTF8: "The form is not valid UTF-8 text."
        case .badEscape: "The form has a '%' that is not followed by two hexadecimal digits."
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` text: query strings and form bodies.
enum FormData {
    /// Most fields a form may have. The page sends four; a body of thousands of empty
    /// fields is only work for the server.
    static let maximumFields = 100

    /// The name/value pairs of `text`, in order, `+` read as space and `%XX` decoded.
    /// - Throws: ``FormError`` for more than ``maximumFields`` pairs, a bad escape, or
    ///   a name or value that is not UTF-8 once decoded.
    static func pairs(_ text: Substring) throws(FormError) -> [(name: String, value: String)] {
        var result: [(name: String, value: String)] = []
        // Split on bytes, not Characters: bodies can be large.
        for pair in text.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            guard result.count < maximumFields else { throw .tooManyFields }
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            let name = try decode(Substring(pair[..<(equals ?? pair.endIndex)]))
            var value = ""
            if let equals { value = try decode(Substring(pair[pair.index(after: equals)...])) }
            result.append((name, value))
        }
        return result
    }

    /// The pairs of raw body bytes, which must be UTF-8 before any decoding.
    static func pairs(utf8 bytes: some Collection<UInt8>) throws(FormError) -> [(name: String, value: String)] {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8 }
        return try pairs(text[...])
    }

    /// The last value of `name` in a query string, as Tornado's `get_argument` returns it;
    /// `nil` when it is absent or the query is not a form.
    static func value(_ name: String, in text: Substring) -> String? {
        (try? pairs(text))?.last { $0.name == name }?.value
    }

    /// `text` with `+` as space (when `plusAsSpace`) and `%XX` decoded.
    /// - Throws: ``FormError/badEscape`` or ``FormError/notUTF8``.
    static func decode(_ text: Substring, plusAsSpace: Bool = true) throws(FormError) -> String {
        // Most values have nothing to decode.
        if !text.utf8.contains(where: { $0 == UInt8(ascii: "%") || ($0 == UInt8(ascii: "+") && plusAsSpace) }) {
            return String(text)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+") where plusAsSpace:
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { throw .badEscape }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else { throw .notUTF8 }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Substring {
    /// A cookie's value as the page wrote it: spaces trimmed, quotes removed, `%XX`
    /// escapes (from `encodeURIComponent`) decoded.
    var cookieValue: String {
        var value = trimmingSpaces
        if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") {
            value = value.dropFirst().dropLast()
        }
        return String(value).removingPercentEscapes
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}

extension String {
    /// `%XX` escapes decoded (cookies written by `encodeURIComponent`); unchanged if invalid.
    var removingPercentEscapes: String {
        guard contains("%") else { return self }
        return (try? FormData.decode(self[...], plusAsSpace: false)) ?? self
    }
}
