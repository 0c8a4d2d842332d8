import Chat
import ChatArchive
import Foundation
import NIOCore

/// A channel's archived messages as a transcript (`chatroom export`): every epoch, oldest
/// first, each message in its final state (edited text, reactions; a deleted one without
/// its words); the changes themselves are not lines of their own.
public enum Transcript {
    public enum Format: String, CaseIterable, Sendable {
        /// One `/history` message object a line.
        case jsonl
        /// `time,epoch,offset,from,name,text,edited,deleted` with a header line, RFC 4180.
        case csv
    }

    /// Messages read from the archive at once.
    static let page = 1000

    /// Writes `channel`'s messages since `since` (ms since 1970; `nil`: all) to `write`;
    /// answers how many.
    public static func write(
        _ channel: ChannelName, from archive: any Archive, since: Int64?, format: Format, to write: (String) throws -> Void
    ) async throws -> Int {
        if format == .csv { try write("time,epoch,offset,from,name,text,edited,deleted\r\n") }
        var count = 0
        for epoch in try await archive.epochs(of: channel) {
            var after: Int64 = 0
            while true {
                let messages = try await archive.messages(in: channel, epoch: epoch.epoch, after: after, before: nil, limit: page)
                for message in messages where message.kind == .message && message.time >= (since ?? Int64.min) {
                    try write(line(message, format: format))
                    count += 1
                }
                guard let last = messages.last, messages.count == page else { break }
                after = last.offset
            }
        }
        return count
    }

    static func line(_ message: Message, format: Format) -> String {
        switch format {
        case .jsonl:
            var json = ByteBuffer()
            ChatV1.writeMessage(message, into: &json)
            return String(buffer: json) + "\n"
        case .csv:
            let fields = [
                isoTime(message.time), message.epoch, String(message.offset), message.from ?? "", message.name ?? "", message.text,
                message.state?.edited.map(isoTime) ?? "", message.state?.deleted == true ? "true" : "false",
            ]
            return fields.map(csvField).joined(separator: ",") + "\r\n"
        }
    }

    /// A field quoted when it holds a comma, a quote or a line break (RFC 4180); a field
    /// a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a `'` before it.
    static func csvField(_ value: String) -> String {
        var value = value
        // What a spreadsheet runs as a formula (OWASP's list, tab and carriage return too).
        if let first = value.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first), Double(value) == nil { value = "'" + value }
        guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    static func isoTime(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    /// `--since`, as ms since 1970: see ``TranscriptSince/parse(_:)``.
    public static func parseSince(_ text: String) -> Int64? {
        TranscriptSince.parse(text)
    }
}
