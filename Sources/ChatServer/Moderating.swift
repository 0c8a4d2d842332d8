import Chat
import HTTPTypes
import Logging
import NIOCore

/// Someone allowed to moderate: an operator with the admin token, or a person whose
/// sign-in says so (`role: "moderator"`).
struct Moderator: Sendable, Equatable {
    /// Who it is, for the log: `admin` for the admin token, else their identity.
    var by: String
    /// The identity their deletes are published as (`from`); `nil`: none (an operator).
    var identity: String?
    /// The rooms their sign-in opens; `nil`: every room.
    var rooms: RoomScope? = nil
    /// Their sign-in's `sub` (the site's id for them), for the log.
    var subject: String? = nil
    /// The client address they acted from, for the log.
    var address: String? = nil

    /// The operator holding `--admin-token`.
    static let admin = Moderator(by: "admin", identity: nil)
}

/// What `/api/…` and a moderator's chat.v2 frames share: the rules an action must meet,
/// carrying it out, and its log line and count.
struct Moderating: Sendable {
    let broker: any Broker
    let metrics: ChatMetrics

    /// The longest slow mode: a day between two messages.
    static let longestSlowMode = 86_400

    /// An action from what was sent; the refusal (400) says what is wrong.
    /// - Parameters:
    ///   - action: `mute`, `ban`, `unban` or `slowmode`.
    ///   - user: the identity, as in `from`, presence and members frames.
    ///   - seconds: as sent; `nil` when missing.
    static func action(_ action: String, user: String?, seconds: String?) -> Result<ModerationAction, Refusal> {
        func bad(_ message: String) -> Result<ModerationAction, Refusal> { .failure(Refusal(.badRequest, message)) }
        let longest = action == "slowmode" ? longestSlowMode : ModerationAction.longest
        var whole: Int?
        if action != "unban" {
            guard let seconds else { return bad("Missing seconds: how long, a whole number from 0 to \(longest).") }
            guard let value = Int(seconds), (0...longest).contains(value) else {
                return bad("seconds must be a whole number from 0 to \(longest), got '\(String(seconds.unicodeScalars.prefix(24)))'.")
            }
            whole = value
        }
        if action == "slowmode" { return .success(.slowMode(seconds: whole ?? 0)) }
        guard let user else { return bad("Missing user: the identity id of the person, as shown in 'from' and in the members list.") }
        guard Identities.isID(user) else {
            return bad("user must be an identity id (15 characters of A–Z a–z 0–9 - _, as shown in 'from' and in the members list).")
        }
        switch action {
        case "mute": return .success(.mute(user, seconds: whole ?? 0))
        case "ban": return .success(.ban(user, seconds: whole ?? 0))
        case "unban": return .success(.unban(user))
        default: return bad("Unknown moderation action '\(String(action.unicodeScalars.prefix(24)))'.")
        }
    }

    /// Carries out `action` in `channel`, logs who did what to whom (notice) and counts it.
    func moderate(_ action: ModerationAction, in channel: ChannelName, by moderator: Moderator, logger: Logger) async -> Result<ModerationOutcome, Refusal> {
        do {
            let outcome = try await broker.moderate(action, in: channel)
            var metadata: Logger.Metadata = ["by": "\(moderator.by)", "action": "\(action.name)", "channel": "\(channel)"]
            if let subject = moderator.subject { metadata["sub"] = "\(subject)" }
            if let address = moderator.address { metadata["client"] = "\(address)" }
            if let user = action.user { metadata["user"] = "\(user)" }
            if let seconds = action.seconds { metadata["seconds"] = "\(seconds)" }
            logger.notice("Moderation", metadata: metadata)
            metrics.moderated(action: action.name)
            return .success(outcome)
        } catch let error as BrokerError {
            if case .refused(let status) = error.kind { return .failure(Refusal(HTTPResponse.Status(code: status), error.message)) }
            return .failure(Self.unavailable(error))
        } catch {
            return .failure(Self.unavailable(error))
        }
    }

    /// Deletes message `offset` of `channel`, whoever sent it, as its author's delete would.
    func delete(_ offset: Int64, in channel: ChannelName, by moderator: Moderator, logger: Logger) async -> Result<Publication, Refusal> {
        let request = PublishRequest(
            ByteBuffer(), to: channel, options: PublishOptions(mayCreateChannel: false), from: moderator.identity, kind: .delete(of: offset), moderator: true
        )
        do {
            let publication = try await broker.publish(request)
            logger.notice("Moderation", metadata: ["by": "\(moderator.by)", "action": "delete", "channel": "\(channel)", "offset": "\(offset)"])
            metrics.moderated(action: "delete")
            return .success(publication)
        } catch let error as BrokerError {
            switch error.kind {
            case .refused(let status): return .failure(Refusal(HTTPResponse.Status(code: status), error.message))
            case .newChannelRefused: return .failure(Refusal(.notFound, "The channel \(channel) has no messages."))
            default: return .failure(Self.unavailable(error))
            }
        } catch {
            return .failure(Self.unavailable(error))
        }
    }

    /// The broker could not do it: 503, or 504 when it may have been done (doing it again
    /// is safe: every action sets a state).
    private static func unavailable(_ error: any Error) -> Refusal {
        var refusal: Refusal
        if let error = error as? BrokerError, case .unconfirmed = error.kind {
            refusal = Refusal(.gatewayTimeout, "It may have been done: \(error.message) in time. Doing it again is safe.")
        } else {
            refusal = Refusal(.serviceUnavailable, "Not done: \(error). Nothing changed; try again shortly.")
        }
        refusal.headers[.retryAfter] = "1"
        return refusal
    }
}
