/// Decodes `application/x-www-form-urlencoded` text: query strings and form bodies.
enum FormData {
    /// The name/value pairs of `text`, in order, `+` read as space and `%XX` decoded.
    /// Pairs that are not valid UTF-8 after decoding are dropped.
    static func pairs(_ text: Substring) -> [(name: String, value: String)] {
        // Split on bytes, not Characters: bodies can be large.
        text.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true).compactMap { pair in
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            guard let name = decode(Substring(pair[..<(equals ?? pair.endIndex)])) else { return nil }
            guard let value = equals.map({ decode(Substring(pair[pair.index(after: $0)...])) }) ?? "" else { return nil }
            return (name, value)
        }
    }

    /// The last value of `name` in `text`, as Tornado's `get_argument` returns it.
    static func value(_ name: String, in text: Substring) -> String? {
        pairs(text).last { $0.name == name }?.value
    }

    static func decode(_ text: Substring, plusAsSpace: Bool = true) -> String? {
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
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
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

/// Reads cookies from `Cookie` header values.
enum CookieHeader {
    /// The value of cookie `name` in the given `Cookie` header values, if present.
    static func value(_ name: String, in headers: [String]) -> String? {
        for header in headers {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingSpaces == name else { continue }
                var value = parts[1].trimmingSpaces
                if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") {
                    value = value.dropFirst().dropLast()
                }
                return String(value).removingPercentEscapes
            }
        }
        return nil
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}

extension String {
    /// `%XX` escapes decoded (cookies written by `encodeURIComponent`); unchanged if invalid.
    var removingPercentEscapes: String {
        guard contains("%") else { return self }
        return FormData.decode(self[...], plusAsSpace: false) ?? self
    }
}
