import Chat
import HTTPTypes
import Logging
import NIOCore

/// A moderator's frames: mute, ban, unban and slow mode, with the rules and the log line
/// of the moderation API; each answered `moderated` or `nack`.
extension ChatV2Socket {
    func moderate(id: String?, channel: String, action: ChatV2Request.Moderation, context: ChannelHandlerContext) {
        let answerID = String((id ?? "").unicodeScalars.prefix(256))
        guard isModerator else {
            let refusal = Refusal(.forbidden, "Only moderators may mute, ban or slow a room down.")
            nack(answerID, channel, refusal, reason: "forbidden", context: context)
            return
        }
        let name: ChannelName
        do {
            name = try ChannelName(validating: channel)
        } catch {
            nack(answerID, channel, Refusal(.badRequest, "Invalid channel name: \(error.reason)."), reason: "bad_request", context: context)
            return
        }
        // A moderator whose sign-in opens some rooms moderates those.
        if let outside = signIn?.refusal(for: name) {
            nack(answerID, channel, outside, reason: "forbidden", context: context)
            return
        }
        let made: Result<ModerationAction, Refusal> = switch action {
        case .mute(let user, let seconds): Moderating.action("mute", user: user, seconds: String(seconds))
        case .ban(let user, let seconds): Moderating.action("ban", user: user, seconds: String(seconds))
        case .unban(let user): Moderating.action("unban", user: user, seconds: nil)
        case .slowMode(let seconds): Moderating.action("slowmode", user: nil, seconds: String(seconds))
        }
        let moderation: ModerationAction
        switch made {
        case .success(let checked): moderation = checked
        case .failure(let refusal):
            nack(answerID, channel, refusal, reason: "bad_request", context: context)
            return
        }
        let moderating = Moderating(broker: server.broker, metrics: server.metrics)
        let moderator = Moderator(
            by: person.member.id, identity: person.member.id, rooms: signIn?.rooms, subject: signIn?.subject, address: closing.client
        )
        let logger = self.logger
        context.eventLoop.makeFutureWithTask {
            await moderating.moderate(moderation, in: name, by: moderator, logger: logger)
        }.assumeIsolated().whenSuccess { result in
            guard self.isOpen, let context = self.context else { return }
            switch result {
            case .success(let outcome):
                context.writeAndFlush(self.wrapOutboundOut(ChatV2.moderated(id: answerID, action: moderation, channel: name, change: outcome.change)), promise: nil)
            case .failure(let refusal):
                self.nack(answerID, channel, refusal, reason: ChatMetrics.reason(status: refusal.status.code), level: .warning, context: context)
            }
        }
    }
}

extension ChatV2 {
    /// A moderator's action was carried out: what, where, to whom, and until when (Unix
    /// ms; 0: until lifted, or lifted).
    static func moderated(id: String, action: ModerationAction, channel: ChannelName, change: ModerationChange?) -> ByteBuffer {
        WebSocketWire.textFrame(estimatedLength: 192) { json in
            json.writeStaticString(#"{"type":"moderated","id":"#)
            JSON.writeString(id, into: &json)
            json.writeStaticString(#","action":"#)
            JSON.writeString(action.name, into: &json)
            json.writeStaticString(#","channel":"#)
            JSON.writeString(channel.rawValue, into: &json)
            if let user = action.user {
                json.writeStaticString(#","user":"#)
                JSON.writeString(user, into: &json)
            }
            if let seconds = action.seconds { json.writeString(#","seconds":\#(seconds)"#) }
            switch change {
            case .muted(_, let until), .banned(_, let until): json.writeString(#","until":\#(until)"#)
            default: break
            }
            json.writeStaticString("}")
        }
    }
}
