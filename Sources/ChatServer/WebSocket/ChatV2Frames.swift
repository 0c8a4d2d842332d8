import Chat
import NIOCore

/// The frames only `chat.v2` has; its `message`, `gap`, `reset` and presence frames are
/// ``ChatV1``'s, byte for byte.
enum ChatV2 {
    /// A subscription is in place: `offset` is the channel's last offset (0 when empty),
    /// `epoch` `null` when the channel has no history.
    /// `read`: how far the socket's person has read the channel (0: nothing yet); `seen`,
    /// in a one-to-one room, how far the other person has.
    static func subscribed(channel: ChannelName, epoch: String?, offset: Int64, read: Int64, seen: Int64? = nil) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 128) { json in
            json.writeStaticString(#"{"type":"subscribed","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            json.writeStaticString(#","epoch":"#)
            if let epoch { JSON.writeString(epoch, into: &json) } else { json.writeStaticString("null") }
            json.writeString(#","offset":\#(offset),"read":\#(read)"#)
            if let seen { json.writeString(#","seen":\#(seen)"#) }
            json.writeStaticString("}")
        }
    }

    static func unsubscribed(channel: String) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 96) { json in
            json.writeStaticString(#"{"type":"unsubscribed","channel":"#)
            JSON.writeString(channel, into: &json)
            json.writeStaticString("}")
        }
    }

    /// A subscription that is not made (or no longer holds); the socket stays open.
    /// `until`: when a timed refusal (a ban for some time) ends, Unix ms.
    /// `reason`: what `chatroom_refusals_total` counts it as (`banned`, `room_full`, …).
    static func refused(channel: String, code: UInt16, message: String, until: Int64? = nil, reason: String? = nil) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: message.utf8.count + 128) { json in
            json.writeStaticString(#"{"type":"refused","channel":"#)
            JSON.writeString(channel, into: &json)
            json.writeString(#","code":\#(code),"message":"#)
            JSON.writeString(message, into: &json)
            if let until { json.writeString(#","until":\#(until)"#) }
            if let reason {
                json.writeStaticString(#","reason":"#)
                JSON.writeString(reason, into: &json)
            }
            json.writeStaticString("}")
        }
    }

    /// The broker has the message `id` became.
    static func ack(id: String, message: Message) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 192) { json in
            json.writeStaticString(#"{"type":"ack","id":"#)
            JSON.writeString(id, into: &json)
            json.writeStaticString(#","channel":"#)
            JSON.writeString(message.channel.rawValue, into: &json)
            json.writeString(#","offset":\#(message.offset),"epoch":"#)
            JSON.writeString(message.epoch, into: &json)
            json.writeStaticString("}")
        }
    }

    /// A send that was refused, with the status `POST /send/` would answer.
    /// `reason`: what `chatroom_refusals_total` counts it as (`muted`, `slow_mode`, …), for
    /// a client to tell refusals apart without reading the words.
    static func nack(id: String, channel: String, status: Int, message: String, retryAfter: String?, reason: String? = nil) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: message.utf8.count + 192) { json in
            json.writeStaticString(#"{"type":"nack","id":"#)
            JSON.writeString(id, into: &json)
            json.writeStaticString(#","channel":"#)
            JSON.writeString(channel, into: &json)
            json.writeString(#","status":\#(status),"message":"#)
            JSON.writeString(message, into: &json)
            if let retryAfter, let seconds = Int(retryAfter) { json.writeString(#","retryAfter":\#(seconds)"#) }
            if let reason {
                json.writeStaticString(#","reason":"#)
                JSON.writeString(reason, into: &json)
            }
            json.writeStaticString("}")
        }
    }
}
