/// libFuzzer target `chatv1`: the input is the text of one chat.v1 frame.
/// Invariants: a ping, who or refresh comes from a JSON object; a refusal says why, in at most
/// 120 characters (it quotes at most 32 characters of an unknown type).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    switch ChatV1Request(text) {
    case .ping, .who, .refresh:
        guard text.contains("{") else { fatalError("a request that is not a JSON object") }
    case .invalid(let reason):
        guard !reason.isEmpty, reason.count <= 120 else { fatalError("refusal of \(reason.count) characters") }
    }
    return 0
}
