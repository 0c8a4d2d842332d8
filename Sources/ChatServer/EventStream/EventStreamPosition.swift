// Imports only Foundation (and Chat, outside the fuzzer): scripts/fuzz.sh compiles this
// file with ChannelName.swift and Offset.swift into a libFuzzer target of its own.
#if canImport(Chat)
import Chat
#endif

/// Where an event stream (`GET /events`) stands in every channel it carries: the `id` of
/// its events, and what `Last-Event-ID` (or `lastEventId`) brings back on a reconnect.
///
/// The compact form is `CHANNEL=EPOCH:OFFSET`, one per channel, joined by `,`:
///
///     general=5b9a17af82b799ae:57,support=0c1d2e3f40516273:12
///
/// Channel names hold no `=` or `,`; an epoch is letters and digits, so the last `:` of an
/// entry starts its offset. An empty epoch with offset 0 (`general=:0`) is a channel that
/// had no history yet when the stream joined it: a resume from there gets everything.
struct EventStreamPosition: Equatable, Sendable {
    /// Where the stream stands in one channel.
    struct Entry: Equatable, Sendable {
        var channel: ChannelName
        /// The epoch of ``offset``; empty while the channel has no history.
        var epoch: String
        var offset: Int64
    }

    /// The entries, in the order they are written.
    var entries: [Entry]

    /// Longest position read back (a browser sends what the server wrote, at most
    /// `--max-subscriptions` entries of about 100 bytes).
    static let maximumLength = 16 * 1024

    /// The entry of `channel`, if the position has one.
    func entry(of channel: ChannelName) -> Entry? {
        entries.first { $0.channel == channel }
    }

    /// The compact form.
    var description: String {
        var text = ""
        for (index, entry) in entries.enumerated() {
            if index > 0 { text += "," }
            Self.write(entry, into: &text)
        }
        return text
    }

    /// One entry's compact form, appended to `text`.
    static func write(_ entry: Entry, into text: inout String) {
        text += entry.channel.rawValue
        text += "="
        text += entry.epoch
        text += ":"
        text += String(entry.offset)
    }

    /// Why a position cannot be read.
    struct Problem: Error, Equatable, CustomStringConvertible {
        var description: String
    }

    /// Reads the compact form. An empty text is a position with no entries.
    /// - Throws: ``Problem`` saying which entry is wrong and why, in at most about 120
    ///   characters.
    init(parsing text: String) throws(Problem) {
        guard text.utf8.count <= Self.maximumLength else {
            throw Problem(description: "it is longer than \(Self.maximumLength) bytes")
        }
        var entries: [Entry] = []
        guard !text.isEmpty else {
            self.entries = []
            return
        }
        for (index, part) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            guard let equals = part.firstIndex(of: "=") else {
                throw Problem(description: "entry \(number) has no '=' (each is CHANNEL=EPOCH:OFFSET)")
            }
            let name = String(part[..<equals])
            let channel: ChannelName
            do {
                channel = try ChannelName(validating: name)
            } catch {
                throw Problem(description: "entry \(number): \(error.reason)")
            }
            let place = part[part.index(after: equals)...]
            guard let colon = place.lastIndex(of: ":") else {
                throw Problem(description: "entry \(number) has no ':' between its epoch and offset")
            }
            let epoch = String(place[..<colon])
            guard epoch.utf8.count <= 64, epoch.utf8.allSatisfy(Self.isEpochByte) else {
                throw Problem(description: "entry \(number): an epoch is at most 64 letters and digits")
            }
            guard let offset = Offset.parse(place[place.index(after: colon)...]) else {
                throw Problem(description: "entry \(number): the offset must be a whole number from 0 to \(Offset.maximum)")
            }
            guard !epoch.isEmpty || offset == 0 else {
                throw Problem(description: "entry \(number): an offset other than 0 needs its epoch")
            }
            guard !entries.contains(where: { $0.channel == channel }) else {
                throw Problem(description: "entry \(number) names a channel a second time")
            }
            entries.append(Entry(channel: channel, epoch: epoch, offset: offset))
        }
        self.entries = entries
    }

    init(entries: [Entry]) {
        self.entries = entries
    }

    private static func isEpochByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: false
        }
    }
}
