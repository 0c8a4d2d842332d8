import Foundation
import Logging

/// Log lines as text (`--log-format text`, the default), one line per event:
///
///     2026-12-01T13:05:44.120Z info chatroom: Refused a message client=198.51.100.1 reason="Too many messages from your address" status=429
///
/// Metadata follows the message as `key=value`, sorted by key. A value that holds a
/// space, `=`, a quote, a backslash or a control character is quoted, with `"`, `\`
/// and control characters escaped, so a client-controlled value (an origin, a name)
/// can neither forge another field nor start a new line.
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let write: @Sendable (String) -> Void

    /// A handler writing to standard error.
    public static func standardError(label: String) -> TextLogHandler {
        TextLogHandler(label: label) { line in FileHandle.standardError.write(Data(line.utf8)) }
    }

    /// A handler writing each line (with its newline) through `write`.
    public init(label: String, write: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        line += " \(event.level.rawValue) \(label): " + Self.escaped("\(event.message)")
        let merged = metadata.merging(event.metadata ?? [:]) { _, line in line }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + Self.field(key) + "=" + Self.field("\(value)")
        }
        write(line + "\n")
    }

    /// `text` as it is when it needs no quotes, else quoted and escaped.
    static func field(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { scalar in
            scalar.value > 0x20 && scalar.value != 0x7F && !(0x80...0x9F).contains(scalar.value) && scalar != "\"" && scalar != "\\" && scalar != "="
                && !scalar.properties.isWhitespace
        }
        return plain ? text : "\"" + escaped(text, quote: true) + "\""
    }

    /// Control characters (and, inside quotes, `"` and `\`) written as escapes.
    static func escaped(_ text: String, quote: Bool = false) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"" where quote: out += "\\\""
            case "\\" where quote: out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value): out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
