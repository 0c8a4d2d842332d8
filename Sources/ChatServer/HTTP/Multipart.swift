// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.

/// Reads the text fields of a `multipart/form-data` body (what a browser's `FormData` sends).
///
/// One pass over the body: each delimiter is searched for once, from where the last one
/// ended, and each part's headers only inside that part, so the work is linear in the
/// body's size whatever its shape. At most ``FormData/maximumFields`` parts.
enum Multipart {
    /// Longest boundary RFC 2046 §5.1.1 allows.
    static let maximumBoundaryLength = 70

    /// The boundary named in a `Content-Type` header, if it is multipart/form-data with
    /// a boundary of 1–70 characters.
    static func boundary(in contentType: String) -> String? {
        guard contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let parts = parameter.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingSpaces.lowercased() == "boundary" else { continue }
            var value = parts[1].trimmingSpaces
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") { value = value.dropFirst().dropLast() }
            guard (1...maximumBoundaryLength).contains(value.utf8.count) else { return nil }
            return String(value)
        }
        return nil
    }

    /// The fields of `body` with names and text values, in order; file parts and parts
    /// without a name or without a header block are skipped, as browsers never send them
    /// for text fields.
    /// - Throws: ``FormError/tooManyFields`` past ``FormData/maximumFields`` parts;
    ///   ``FormError/notUTF8`` for a text field that is not UTF-8.
    static func fields(_ body: [UInt8], boundary: String) throws(FormError) -> [(name: String, value: String)] {
        let delimiter = Array("--\(boundary)".utf8)
        var result: [(name: String, value: String)] = []
        var parts = 0
        // The first delimiter may open the body; every later one follows a CRLF.
        guard var start = find(delimiter, in: body, from: 0) else { return [] }
        while true {
            var partStart = start + delimiter.count
            // `--` after a delimiter closes the body.
            if partStart + 1 < body.count, body[partStart] == UInt8(ascii: "-"), body[partStart + 1] == UInt8(ascii: "-") { break }
            guard let next = find(delimiter, in: body, from: partStart) else { break }
            parts += 1
            guard parts <= FormData.maximumFields else { throw .tooManyFields }
            start = next
            // The part runs from after the delimiter line's CRLF to before the next one's.
            if partStart + 1 < next, body[partStart] == 13, body[partStart + 1] == 10 { partStart += 2 }
            var partEnd = next
            if partEnd - 2 >= partStart, body[partEnd - 2] == 13, body[partEnd - 1] == 10 { partEnd -= 2 }
            guard let headerEnd = find(headerTerminator, in: body, from: partStart, before: partEnd) else { continue }
            let headers = String(decoding: body[partStart..<headerEnd], as: UTF8.self)
            guard let name = fieldName(headers), !headers.lowercased().contains("filename=") else { continue }
            guard let value = String(validating: body[(headerEnd + headerTerminator.count)..<partEnd], as: UTF8.self) else { throw .notUTF8 }
            result.append((name, value))
        }
        return result
    }

    private static let headerTerminator = Array("\r\n\r\n".utf8)

    private static func fieldName(_ headers: String) -> String? {
        for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
            for parameter in line.split(separator: ";").dropFirst() {
                let parts = parameter.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingSpaces == "name" else { continue }
                var value = parts[1].trimmingSpaces
                if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") { value = value.dropFirst().dropLast() }
                return String(value)
            }
        }
        return nil
    }

    /// Where `needle` first starts in `haystack[start..<end]`, wholly inside it.
    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int, before end: Int? = nil) -> Int? {
        let end = min(end ?? haystack.count, haystack.count)
        guard !needle.isEmpty, start >= 0, end - start >= needle.count else { return nil }
        let first = needle[0]
        var index = start
        while index <= end - needle.count {
            if haystack[index] == first {
                var matched = 1
                while matched < needle.count && haystack[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index }
            }
            index += 1
        }
        return nil
    }
}
