/// libFuzzer target `form`: the input is a urlencoded body (raw bytes), a query string
/// (the same bytes as text) and cookie values (its lines).
/// Invariants: at most `FormData.maximumFields` pairs; bytes that are valid UTF-8 give the
/// same pairs whether read as a body or as a query; `FormData.value` is the last pair's.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let text = String(decoding: bytes, as: UTF8.self)

    let body = try? FormData.pairs(utf8: bytes)
    let query = try? FormData.pairs(text[...])
    if let body {
        guard let query, body.elementsEqual(query, by: { $0 == $1 }) else { fatalError("body and query pairs differ") }
    }
    if let query {
        guard query.count <= FormData.maximumFields else { fatalError("\(query.count) pairs") }
        guard FormData.value("data", in: text[...]) == query.last(where: { $0.name == "data" })?.value else { fatalError("value(_:in:) is not the last pair") }
    }

    for line in text.split(separator: "\n") { _ = line.cookieValue }
    _ = text.removingPercentEscapes
    return 0
}
