// Imports only Foundation: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.
import Foundation

/// What a `chat.v1` client may send.
enum ChatV1Request: Equatable {
    case ping
    case who
    case invalid(String)

    private struct Frame: Decodable {
        var type: String
    }

    init(_ text: String) {
        guard let frame = try? JSONDecoder().decode(Frame.self, from: Data(text.utf8)) else {
            self = .invalid("frames must be JSON objects with a \"type\"")
            return
        }
        switch frame.type {
        case "ping": self = .ping
        case "who": self = .who
        default: self = .invalid("unknown frame type \"\(String(frame.type.unicodeScalars.prefix(24)))\"; chat.v1 clients may send {\"type\":\"ping\"} or {\"type\":\"who\"}")
        }
    }
}
