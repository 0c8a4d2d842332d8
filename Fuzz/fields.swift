/// libFuzzer target `fields`: the input (as text) is an offset, a sender's name, a
/// message's text, an idempotency key and a channel name.
/// Invariants: `Offset.parse` agrees with `Int64(_:)` on 1–32 decimal digits (leading zeros
/// allowed) and returns
/// 0...`Offset.maximum`; a name `SenderName` accepts has ≤ 32 characters and ≤ 128 bytes
/// once trimmed and no control characters; `MessageText` refuses exactly the C0 controls
/// but tab, LF and CR, DEL and the C1 controls; an idempotency key or channel name that is
/// accepted has 1–64 allowed bytes; both `ChannelName` initializers agree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let digits = (1...32).contains(text.utf8.count) && text.utf8.allSatisfy { (48...57).contains($0) }

    let offset = Offset.parse(text)
    guard offset == Offset.parse(text[...]) else { fatalError("String and Substring parse differently") }
    if let offset {
        guard digits, (0...Offset.maximum).contains(offset), offset == Int64(text) else { fatalError("Offset.parse(\(text)) = \(offset)") }
    } else if digits, let value = Int64(text), value <= Offset.maximum {
        fatalError("Offset.parse(\(text)) = nil")
    }

    if SenderName.problem(with: text) == nil, let name = SenderName.normalized(text) {
        let scalars = name.unicodeScalars
        guard name.count <= SenderName.maximumLength, name.utf8.count <= SenderName.maximumBytes,
            !scalars.first!.properties.isWhitespace, !scalars.last!.properties.isWhitespace,
            !scalars.contains(where: { $0.properties.generalCategory == .control })
        else { fatalError("accepted name \(name.debugDescription)") }
    }

    let refused = text.unicodeScalars.contains { ($0.value < 0x20 && ![0x09, 0x0A, 0x0D].contains($0.value)) || (0x7F...0x9F).contains($0.value) }
    guard (MessageText.problem(with: text) != nil) == refused else { fatalError("MessageText.problem disagrees") }

    if IdempotencyKey.isValid(text) {
        guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy({ $0 < 128 }) else { fatalError("accepted key \(text.debugDescription)") }
    }

    do throws(ChannelNameError) {
        let channel = try ChannelName(validating: text)
        guard channel.rawValue == text, ChannelName(text) == channel, (1...64).contains(text.utf8.count) else { fatalError("channel \(text.debugDescription)") }
    } catch {
        guard ChannelName(text) == nil, !error.reason.isEmpty else { fatalError("ChannelName initializers disagree") }
    }
    return 0
}
