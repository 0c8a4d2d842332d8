/// libFuzzer target `multipart`: the input's first line is a boundary (or a whole
/// `Content-Type`), the rest a `multipart/form-data` body, read with boundary `a` and with
/// the boundary parsed from the first line.
/// Invariants: a parsed boundary has 1–70 bytes; at most `FormData.maximumFields` fields;
/// no field's value holds the delimiter (`--` and the boundary).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let newline = input.firstIndex(of: UInt8(ascii: "\n")) ?? input.endIndex
    let line = String(decoding: input[..<newline], as: UTF8.self)
    let body = Array(input[min(newline + 1, input.endIndex)...])

    _ = Multipart.boundary(in: line)
    var boundaries = ["a"]
    if let parsed = Multipart.boundary(in: "multipart/form-data; boundary=" + line) {
        guard (1...Multipart.maximumBoundaryLength).contains(parsed.utf8.count) else { fatalError("boundary of \(parsed.utf8.count) bytes") }
        boundaries.append(parsed)
    }
    for boundary in boundaries {
        guard let fields = try? Multipart.fields(body, boundary: boundary) else { continue }
        guard fields.count <= FormData.maximumFields else { fatalError("\(fields.count) fields") }
        let delimiter = Array("--\(boundary)".utf8)
        for field in fields where contains(Array(field.value.utf8), delimiter) {
            fatalError("a value holds the delimiter \(boundary)")
        }
    }
    return 0
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard haystack.count >= needle.count else { return false }
    return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
}
