// Imports only Foundation: scripts/fuzz.sh compiles this file into a libFuzzer target on its own.
import Foundation

/// What a `chat.v2` client may send (docs/PROTOCOL.md).
///
/// Only the frame's shape is checked here: names, ids and texts are checked by the
/// socket against the same rules as `POST /send/`, so that a refusal can name the
/// subscription or the message it is about.
enum ChatV2Request: Equatable {
    /// Subscribe to `channel`, resuming after `since` in `epoch` when both are given.
    case subscribe(channel: String, resume: Resume?)
    case unsubscribe(channel: String)
    /// Publish `data` to `channel`; `id` makes sending it again safe.
    case send(id: String, channel: String, data: String, name: String?)
    case ping
    case who(channel: String)
    case invalid(String)

    struct Resume: Equatable {
        var since: Int64
        var epoch: String
    }

    /// Longest `since`, as for chat.v1 (2^53 − 1: what a JavaScript number holds exactly).
    static let maximumOffset: Int64 = 9_007_199_254_740_991

    private struct Frame: Decodable {
        var type: String
        var channel: String?
        var since: Int64?
        var epoch: String?
        var id: String?
        var data: String?
        var name: String?
    }

    init(_ text: String) {
        let frame: Frame
        do {
            frame = try JSONDecoder().decode(Frame.self, from: Data(text.utf8))
        } catch DecodingError.typeMismatch(_, let context) where !context.codingPath.isEmpty {
            self = .invalid(Self.wrongType(context))
            return
        } catch DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty {
            self = .invalid(Self.wrongType(context))
            return
        } catch {
            self = .invalid("frames must be JSON objects with a \"type\"")
            return
        }
        func needs(_ value: String?, _ field: String) -> String? {
            if value == nil { return "a \"\(frame.type)\" frame needs \"\(field)\"" }
            return nil
        }
        switch frame.type {
        case "ping":
            self = .ping
        case "who", "unsubscribe":
            guard let channel = frame.channel else {
                self = .invalid(needs(nil, "channel")!)
                return
            }
            self = frame.type == "who" ? .who(channel: channel) : .unsubscribe(channel: channel)
        case "subscribe":
            guard let channel = frame.channel else {
                self = .invalid(needs(nil, "channel")!)
                return
            }
            switch (frame.since, frame.epoch) {
            case (nil, nil):
                self = .subscribe(channel: channel, resume: nil)
            case (let since?, let epoch?):
                guard (0...Self.maximumOffset).contains(since) else {
                    self = .invalid("since must be a whole number from 0 to \(Self.maximumOffset)")
                    return
                }
                guard Self.isEpoch(epoch) else {
                    self = .invalid("epoch must be 1–64 letters and digits, as the server sent it")
                    return
                }
                self = .subscribe(channel: channel, resume: Resume(since: since, epoch: epoch))
            default:
                self = .invalid("to resume, give both since and epoch (from the last message you received)")
            }
        case "send":
            if let missing = needs(frame.id, "id") ?? needs(frame.channel, "channel") ?? needs(frame.data, "data") {
                self = .invalid(missing)
                return
            }
            self = .send(id: frame.id!, channel: frame.channel!, data: frame.data!, name: frame.name)
        default:
            self = .invalid(
                "unknown frame type \"\(String(frame.type.unicodeScalars.prefix(24)))\"; chat.v2 clients send subscribe, unsubscribe, send, who or ping"
            )
        }
    }

    /// An epoch as the server makes them: 1–64 ASCII letters and digits.
    static func isEpoch(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            }
    }

    private static func wrongType(_ context: DecodingError.Context) -> String {
        let field = context.codingPath.last?.stringValue ?? "field"
        let expected = field == "since" ? "a whole number" : "a string"
        return "the field \"\(String(field.unicodeScalars.prefix(16)))\" has the wrong type: it must be \(expected)"
    }
}
