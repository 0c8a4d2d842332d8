import Chat
import HTTPTypes
import Logging
import NIOCore

/// What `POST /send/` and a chat.v2 `send` share: the rules a message must meet, its
/// publish, and what a broker failure means for the sender.
///
/// The caller checks what belongs to its transport first (origin, body, publish token)
/// and takes the address's send allowance; everything from the message's text on is here,
/// so both answer the same message with the same status and words.
struct Posting: Sendable {
    let broker: any Broker
    let gatekeeper: Gatekeeper
    let maximumMessageSize: Int
    var metrics: ChatMetrics = .none

    /// A message that passed the rules, ready to publish.
    struct Draft: Sendable {
        var channel: ChannelName
        var data: String
        var name: String?
        var options: PublishOptions
        /// The sender's proven identity, if any: it is told of in a one-to-one room's inbox.
        var identity: String?
        /// The sender's address: its allowance of new channels.
        var client: String
        /// The client's idempotency key, without the sender's scope.
        var key: String?
    }

    /// Checks a message against the rules; the refusal is what the sender is answered.
    /// - Parameters:
    ///   - identity: the identity the sender proved (its `uid` cookie), if any.
    ///   - key: the client's idempotency key, if it gave one.
    func draft(data: String?, channel: String?, name: String?, key: String?, identity: String?, client: String) -> Result<Draft, Refusal> {
        guard let data, !data.unicodeScalars.allSatisfy(\.properties.isWhitespace) else {
            return .failure(Refusal(.badRequest, "Missing message: send the text in the form field 'data'."))
        }
        guard data.utf8.count <= maximumMessageSize else {
            return .failure(Refusal(.contentTooLarge, "Message too long: at most \(maximumMessageSize) bytes, got \(data.utf8.count)."))
        }
        if let problem = MessageText.problem(with: data) {
            return .failure(Refusal(.badRequest, "Invalid message: \(problem)."))
        }
        let channelName: ChannelName
        do {
            channelName = try ChannelName(validating: channel ?? ChannelName.fallback.rawValue)
        } catch {
            return .failure(Refusal(.badRequest, "Invalid channel name: \(error.reason)."))
        }
        if let refusal = RoomPolicy.postingRefusal(for: channelName, identity: identity) {
            return .failure(refusal)
        }
        if let name, let problem = SenderName.problem(with: name) {
            return .failure(Refusal(.badRequest, "Invalid name: \(problem)."))
        }
        var options = PublishOptions(mayCreateChannel: gatekeeper.mayCreateChannel(from: client))
        if let key {
            guard IdempotencyKey.isValid(key) else {
                return .failure(Refusal(.badRequest, "Invalid Idempotency-Key: 1–\(IdempotencyKey.maximumLength) characters of A–Z a–z 0–9 _ -."))
            }
            // A key is the sender's own: a browser's identity, else its address.
            options.idempotencyKey = (identity ?? "address:\(client)") + "|" + key
        }
        return .success(
            Draft(channel: channelName, data: data, name: SenderName.normalized(name), options: options, identity: identity, client: client, key: key)
        )
    }

    /// Why a publish failed, for the sender: its status, words, `Retry-After` and the
    /// reason counted in `chatroom_refusals_total`.
    struct Failure: Error, Sendable {
        var refusal: Refusal
        var reason: String
        var level: Logger.Level
    }

    /// Publishes a draft; returns only once the broker has it (or had it: a repeat).
    func publish(_ draft: Draft, logger: Logger) async -> Result<Publication, Failure> {
        let publication: Publication
        do {
            let started = NIODeadline.now()
            publication = try await broker.publish(ByteBuffer(string: draft.data), name: draft.name, to: draft.channel, options: draft.options)
            metrics.published(inNanoseconds: (NIODeadline.now() - started).nanoseconds)
        } catch let error as BrokerError {
            return .failure(failure(error, keyed: draft.key != nil))
        } catch {
            return .failure(Failure(refusal: Refusal(.internalServerError, "Message not sent: \(error)."), reason: "server_error", level: .error))
        }
        if publication.createdChannel { gatekeeper.tookNewChannel(from: draft.client) }
        if let identity = draft.identity, !publication.isRepeat { await notify(about: publication.message, from: identity, logger: logger) }
        return .success(publication)
    }

    /// Publishes drafts as one batch (see ``Broker/publish(_:)``): each channel's in
    /// order; answered each on its own.
    func publish(_ drafts: [Draft], logger: Logger) async -> [Result<Publication, Failure>] {
        let started = NIODeadline.now()
        let results = await broker.publish(drafts.map { PublishRequest(ByteBuffer(string: $0.data), name: $0.name, to: $0.channel, options: $0.options) })
        let nanoseconds = (NIODeadline.now() - started).nanoseconds
        var answers: [Result<Publication, Failure>] = []
        answers.reserveCapacity(drafts.count)
        for (draft, result) in zip(drafts, results) {
            switch result {
            case .success(let publication):
                metrics.published(inNanoseconds: nanoseconds)
                if publication.createdChannel { gatekeeper.tookNewChannel(from: draft.client) }
                if let identity = draft.identity, !publication.isRepeat { await notify(about: publication.message, from: identity, logger: logger) }
                answers.append(.success(publication))
            case .failure(let error):
                answers.append(.failure(failure(error, keyed: draft.key != nil)))
            }
        }
        return answers
    }

    private func failure(_ error: BrokerError, keyed: Bool) -> Failure {
        switch error.kind {
        case .unavailable:
            var refusal = Refusal(.serviceUnavailable, "Message not sent: \(error.message). Nothing was published; try again shortly.")
            refusal.headers[.retryAfter] = "1"
            return Failure(refusal: refusal, reason: ChatMetrics.reason(status: 503), level: .warning)
        case .unconfirmed:
            let retry = keyed
                ? "Retry with the same Idempotency-Key: it is published once either way."
                : "Before sending it again, check the channel; send an Idempotency-Key header to make such retries safe."
            var refusal = Refusal(.gatewayTimeout, "The message may have been published: \(error.message) in time. \(retry)")
            refusal.headers[.retryAfter] = "1"
            return Failure(refusal: refusal, reason: "unconfirmed", level: .warning)
        case .newChannelRefused:
            let tooMany = gatekeeper.tooManyNewChannels()
            var refusal = Refusal(.tooManyRequests, tooMany.message)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            return Failure(refusal: refusal, reason: "new_channels", level: .info)
        case .failed:
            return Failure(refusal: Refusal(.internalServerError, "Message not sent: \(error.message)."), reason: ChatMetrics.reason(status: 500), level: .error)
        }
    }

    /// A message in a one-to-one room: tells the other person, in their inbox (its data
    /// is the room, its name the sender's). The message itself is already published and
    /// acknowledged either way; a notice that cannot be published is logged, and the
    /// page still finds the room's news when it next opens it.
    private func notify(about message: Message, from sender: String, logger: Logger) async {
        guard let (a, b) = RoomPolicy.pair(of: message.channel), let inbox = RoomPolicy.inbox(of: sender == a ? b : a) else { return }
        do {
            _ = try await broker.publish(ByteBuffer(string: message.channel.rawValue), name: message.name, to: inbox)
        } catch {
            logger.warning("Could not tell the other person of a one-to-one message", metadata: ["channel": "\(message.channel)", "error": "\(error)"])
        }
    }
}
