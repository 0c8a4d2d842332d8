/// libFuzzer target `jwt`: the input is the text of a token, as `?token=` carries it.
/// Invariants: a token read has an accepted algorithm and a signature, and a `kid` of at
/// most 128 characters; claims that hold have a sub of 1–255 bytes, a name the name rules
/// take, at most 100 rooms, and an expiry (every token has one) not past, with the leeway; a refusal says why,
/// in at most 300 bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let now: Int64 = 1_800_000_000
    switch ReadToken.parse(text) {
    case .failure(let refusal):
        guard refusal.description.utf8.count <= 300 else { fatalError("a refusal of \(refusal.description.utf8.count) bytes") }
    case .success(let token):
        guard JWTRules.algorithms.contains(token.algorithm), !token.signature.isEmpty else { fatalError("an unchecked algorithm or no signature") }
        guard (token.keyID?.unicodeScalars.count ?? 0) <= 128 else { fatalError("an unbounded kid") }
        switch token.claims.check(now: now) {
        case .success(let claims):
            guard !claims.subject.isEmpty, claims.subject.utf8.count <= 255 else { fatalError("a sub of \(claims.subject.utf8.count) bytes") }
            if let name = claims.name, SenderName.problem(with: name) != nil { fatalError("a name the rules refuse") }
            guard (claims.rooms.map { $0.names.count + $0.prefixes.count } ?? 0) <= RoomScope.maximumEntries else { fatalError("too many rooms") }
            guard now <= claims.expiry + JWTRules.leeway else { fatalError("an expired token held") }
        case .failure(let refusal):
            guard refusal.description.utf8.count <= 300 else { fatalError("a refusal of \(refusal.description.utf8.count) bytes") }
        }
    }
    return 0
}
