import Foundation
import Logging

/// One JSON object per line (`--log-format json`), for log collectors:
///
///     {"time":"2026-11-27T17:10:30.123Z","level":"info","label":"chatroom","message":"Refused a message","status":"429","client":"198.51.100.1"}
///
/// Metadata (the handler's, the logger's and the line's) becomes top-level string fields,
/// after `time`, `level`, `label` and `message`, which it cannot overwrite.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let write: @Sendable (String) -> Void

    /// A handler writing to standard error.
    public static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label) { line in FileHandle.standardError.write(Data(line.utf8)) }
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
        var fields: [(String, String)] = [
            ("time", Self.timestamp()),
            ("level", event.level.rawValue),
            ("label", label),
            ("message", "\(event.message)"),
        ]
        let reserved: Set<String> = ["time", "level", "label", "message"]
        let merged = metadata.merging(event.metadata ?? [:]) { _, line in line }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !reserved.contains(key) {
            fields.append((key, "\(value)"))
        }
        var line = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { line += "," }
            line += Self.quoted(key) + ":" + Self.quoted(value)
        }
        write(line + "}\n")
    }

    private static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String {
        "\"" + TextLogHandler.escaped(text, quote: true) + "\""
    }
}
