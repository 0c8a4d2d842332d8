/// libFuzzer target `chatv2`: the input is the text of one chat.v2 frame.
/// Invariants: a request comes from a JSON object; a resume's `since` is within
/// 0…2^53−1 and its epoch is 1–64 ASCII letters and digits; a change's `of` is within
/// 1…2^53−1 and a read's offset within 0…2^53−1; a moderator's seconds within 0…a year; a
/// reaction taken is one character of at
/// most 64 bytes; a refusal says why, in at
/// most 160 characters (it quotes at most 16 characters of an unknown type and 16 of a
/// field's name).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let request = ChatV2Request(text)
    switch request {
    case .invalid(let reason), .badSubscribe(_, let reason), .badSend(_, _, let reason):
        guard !reason.isEmpty, reason.count <= 160 else { fatalError("refusal of \(reason.count) characters") }
    case .subscribe(_, let resume?):
        guard (0...ChatV2Request.maximumOffset).contains(resume.since), ChatV2Request.isEpoch(resume.epoch) else { fatalError("an unchecked resume") }
        guard text.contains("{") else { fatalError("a request that is not a JSON object") }
    case .change(_, _, let change, let of):
        guard (1...ChatV2Request.maximumOffset).contains(of) else { fatalError("a change of an unchecked offset \(of)") }
        // A reaction the server takes is one character of at most 64 bytes.
        if case .react(let emoji) = change, MessageText.isOneEmoji(emoji), emoji.count != 1 || emoji.utf8.count > 64 {
            fatalError("an emoji of \(emoji.count) characters, \(emoji.utf8.count) bytes")
        }
    case .moderate(_, _, let action):
        // Seconds the socket takes are within 0…a year.
        switch action {
        case .mute(_, let seconds), .ban(_, let seconds), .slowMode(let seconds):
            guard (0...ChatV2Request.longestModeration).contains(seconds) else { fatalError("moderation for an unchecked \(seconds) s") }
        case .unban:
            break
        }
    case .read(_, let offset):
        guard (0...ChatV2Request.maximumOffset).contains(offset) else { fatalError("a read of an unchecked offset \(offset)") }
    default:
        guard text.contains("{") else { fatalError("a request that is not a JSON object") }
    }
    return 0
}
