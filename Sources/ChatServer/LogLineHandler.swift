import Foundation
import Logging

/// Writes one line per log event, as text or as JSON (`--log-format`).
///
/// Text, the default:
///
///     2026-12-01T13:05:44.120Z info chatroom: Refused a message client=198.51.100.1 reason="Too many messages" status=429
///
/// the metadata as `key=value` sorted by key; a value that holds a space, `=`, a quote, a
/// backslash or a control character is quoted, with `"`, `\` and control characters
/// escaped, so a client-controlled value (an origin, a name) can neither forge another
/// field nor start a new line.
///
/// JSON, for log collectors:
///
///     {"time":"2026-11-27T17:10:30.123Z","level":"info","label":"chatroom","message":"Refused a message","status":"429","client":"198.51.100.1"}
///
/// the metadata (the handler's, the logger's and the line's) as top-level string fields,
/// after `time`, `level`, `label` and `message`, which it cannot overwrite.
public struct LogLineHandler: LogHandler {
    /// How lines are written.
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let format: Format
    private let write: @Sendable (String) -> Void

    /// A handler writing to standard error.
    public static func standardError(label: String, format: Format) -> LogLineHandler {
        LogLineHandler(label: label, format: format) { line in FileHandle.standardError.write(Data(line.utf8)) }
    }

    /// A handler writing each line (with its newline) through `write`.
    public init(label: String, format: Format, write: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.format = format
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let merged = metadata.merging(event.metadata ?? [:]) { _, line in line }.sorted { $0.key < $1.key }
        switch format {
        case .text:
            var line = "\(time) \(event.level.rawValue) \(label): " + Self.escaped("\(event.message)")
            for (key, value) in merged { line += " " + Self.field(key) + "=" + Self.field("\(value)") }
            write(line + "\n")
        case .json:
            var fields: [(String, String)] = [("time", time), ("level", event.level.rawValue), ("label", label), ("message", "\(event.message)")]
            let reserved: Set<String> = ["time", "level", "label", "message"]
            for (key, value) in merged where !reserved.contains(key) { fields.append((key, "\(value)")) }
            write("{" + fields.map { Self.quoted($0.0) + ":" + Self.quoted($0.1) }.joined(separator: ",") + "}\n")
        }
    }

    /// A text line's field: `text` as it is when it needs no quotes, else quoted and escaped.
    static func field(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { scalar in
            scalar.value > 0x20 && !mustEscape(scalar) && scalar != "\"" && scalar != "\\" && scalar != "=" && !scalar.properties.isWhitespace
        }
        return plain ? text : quoted(text)
    }

    /// `text` in quotes with `"`, `\` and control characters escaped: a JSON string literal.
    static func quoted(_ text: String) -> String {
        "\"" + escaped(text, quote: true) + "\""
    }

    /// Control characters, and what viewers take for a line break or a change of
    /// direction: U+2028, U+2029, the bidi embeddings, overrides and isolates.
    static func mustEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C: true
        default: false
        }
    }

    /// Control characters (and, when `quote`, `"` and `\`) written as escapes.
    static func escaped(_ text: String, quote: Bool = false) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"" where quote: out += "\\\""
            case "\\" where quote: out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where Self.mustEscape(scalar): out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
