import Foundation

/// libFuzzer target `extensions`: each line of the input is a `Sec-WebSocket-Extensions`
/// value (all of them go to `PerMessageDeflate.negotiate`) and a `Sec-WebSocket-Key`.
/// Invariants: an agreement comes from an offer of permessage-deflate whose parameter
/// names are all known and distinct (and that names client_no_context_takeover when the
/// agreement does); a key is valid exactly when it is the canonical base64 of 16 bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)

    if let agreement = PerMessageDeflate.negotiate(lines) {
        let known: Set<Substring> = ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"]
        let acceptable = lines.flatMap { $0.split(separator: ",") }.compactMap { offer -> [Substring]? in
            let parts = offer.split(separator: ";", omittingEmptySubsequences: false).map(\.trimmingSpaces)
            guard parts.first == "permessage-deflate" else { return nil }
            let names = parts.dropFirst().filter { !$0.isEmpty }.map { $0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingSpaces }
            return names.allSatisfy(known.contains) && Set(names).count == names.count ? names : nil
        }
        guard !acceptable.isEmpty else { fatalError("accepted an offer with an unknown, nameless or repeated parameter") }
        if agreement.clientNoContextTakeover && !acceptable.contains(where: { $0.contains("client_no_context_takeover") }) {
            fatalError("client_no_context_takeover agreed but never offered")
        }
    }

    for key in lines {
        let canonical = Data(base64Encoded: key).map { $0.count == 16 && $0.base64EncodedString() == key } ?? false
        guard WebSocketKey.isValid(key) == canonical else { fatalError("isValid(\(key.debugDescription)) is \(!canonical)") }
    }
    return 0
}
