// Imports only Foundation: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.
import Foundation

/// What a `chat.v1` client may send.
enum ChatV1Request: Equatable {
    case ping
    case who
    /// A newer token of the same person, before the socket's expires.
    case refresh(token: String)
    case invalid(String)

    private struct Frame: Decodable {
        var type: String
        var token: String?
    }

    init(_ text: String) {
        guard let frame = try? JSONDecoder().decode(Frame.self, from: Data(text.utf8)) else {
            self = .invalid("frames must be JSON objects with a \"type\"")
            return
        }
        switch frame.type {
        case "ping": self = .ping
        case "who": self = .who
        case "refresh":
            guard let token = frame.token else {
                self = .invalid("a \"refresh\" frame needs \"token\"")
                return
            }
            self = .refresh(token: token)
        default:
            self = .invalid("unknown frame type \"\(String(frame.type.unicodeScalars.prefix(24)))\"; chat.v1 clients send ping, who and refresh frames")
        }
    }
}
