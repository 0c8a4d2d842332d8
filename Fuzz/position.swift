/// libFuzzer target `position`: the input (as text) is an event stream's position, as
/// `Last-Event-ID` or `lastEventId` brings it back (`EventStreamPosition`).
/// Invariants: a position read has distinct valid channel names, epochs of at most 64
/// ASCII letters and digits (empty only at offset 0) and offsets in 0...`Offset.maximum`;
/// written again it reads back the same; a refusal has at most 160 bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do throws(EventStreamPosition.Problem) {
        let position = try EventStreamPosition(parsing: text)
        var names = Set<String>()
        for entry in position.entries {
            guard ChannelName(entry.channel.rawValue) != nil, names.insert(entry.channel.rawValue).inserted else { fatalError("channel \(entry.channel)") }
            guard entry.epoch.utf8.count <= 64, entry.epoch.utf8.allSatisfy({ $0 < 128 && (Character(UnicodeScalar($0)).isLetter || Character(UnicodeScalar($0)).isNumber) }) else {
                fatalError("epoch \(entry.epoch)")
            }
            guard (0...Offset.maximum).contains(entry.offset), !entry.epoch.isEmpty || entry.offset == 0 else { fatalError("offset \(entry.offset)") }
        }
        guard (try? EventStreamPosition(parsing: position.description)) == position else { fatalError("does not read back: \(position.description)") }
    } catch {
        guard !error.description.isEmpty, error.description.utf8.count <= 160 else { fatalError("refusal of \(error.description.utf8.count) bytes") }
    }
    return 0
}
