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
    /// Which rooms are capped: a capped room takes posts only from its people.
    let rooms: RoomPolicy
    /// This instance and how long a place lasts, for a poster who takes one.
    let presence: PresenceTracker
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
        /// Who the message is from (its `from`): the identity, or a socket's own id.
        var from: String?
        /// A message, or a change to one.
        var kind: MessageKind = .message
        /// The sender holds a place in the room already (a subscribed socket), or needs
        /// none (a trusted integration with the publish token).
        var placeHeld = false
        /// Sent by a moderator (or a trusted integration with the publish token): exempt
        /// from slow mode; a moderator's delete removes anyone's message.
        var moderator = false

        var request: PublishRequest {
            PublishRequest(ByteBuffer(string: data), name: name, to: channel, options: options, from: from, kind: kind, moderator: moderator)
        }
    }

    /// Checks a message against the rules; the refusal is what the sender is answered.
    /// - Parameters:
    ///   - identity: the identity the sender proved (its `uid` cookie), if any.
    ///   - key: the client's idempotency key, if it gave one.
    ///   - from: who the message is from: the identity, or a socket's own id.
    ///   - kind: a message, or a change to one (its `data`: the new text, the emoji, empty).
    ///   - signIn: the person the site signed in, whose token may limit their rooms.
    func draft(
        data: String?, channel: String?, name: String?, key: String?, identity: String?, client: String, from: String? = nil,
        kind: MessageKind = .message, signIn: SignIn? = nil
    ) -> Result<Draft, Refusal> {
        switch kind {
        case .message, .edit:
            guard let data, !data.unicodeScalars.allSatisfy(\.properties.isWhitespace) else {
                return .failure(Refusal(.badRequest, "Missing message: send the text in the form field 'data'."))
            }
            guard data.utf8.count <= maximumMessageSize else {
                return .failure(Refusal(.contentTooLarge, "Message too long: at most \(maximumMessageSize) bytes, got \(data.utf8.count)."))
            }
            if let problem = MessageText.problem(with: data) {
                return .failure(Refusal(.badRequest, "Invalid message: \(problem)."))
            }
        case .react:
            guard let data, MessageText.isOneEmoji(data) else {
                return .failure(Refusal(.badRequest, "Invalid reaction: \"emoji\" must be one emoji."))
            }
        case .delete:
            break
        }
        let data = data ?? ""
        let channelName: ChannelName
        do {
            channelName = try ChannelName(validating: channel ?? ChannelName.fallback.rawValue)
        } catch {
            return .failure(Refusal(.badRequest, "Invalid channel name: \(error.reason)."))
        }
        if let refusal = signIn?.refusal(for: channelName) ?? RoomPolicy.postingRefusal(for: channelName, identity: identity) {
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
            // A key is the sender's own: a browser's identity (or a socket's own id), else
            // its address. A change's key also names what it does, so that an id used
            // once for a message and again for its delete is two requests, not a repeat.
            let scope = from ?? identity ?? "address:\(client)"
            options.idempotencyKey = scope + "|" + key + (kind == .message ? "" : "|" + kind.token)
        }
        return .success(
            Draft(
                channel: channelName, data: data, name: SenderName.normalized(name), options: options, identity: identity, client: client, key: key,
                from: from ?? identity, kind: kind
            )
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
        if let refused = await placeRefusal(draft) { return .failure(refused) }
        let publication: Publication
        do {
            let started = NIODeadline.now()
            publication = try await broker.publish(draft.request)
            metrics.published(inNanoseconds: (NIODeadline.now() - started).nanoseconds)
        } catch let error as BrokerError {
            return .failure(failure(error, keyed: draft.key != nil))
        } catch {
            return .failure(Failure(refusal: Refusal(.internalServerError, "Message not sent: \(error)."), reason: "server_error", level: .error))
        }
        if publication.createdChannel { gatekeeper.tookNewChannel(from: draft.client) }
        if let identity = draft.identity, !publication.isRepeat, draft.kind == .message { await notify(about: publication.message, from: identity, logger: logger) }
        return .success(publication)
    }

    /// Publishes drafts as one batch (see ``Broker/publish(_:)``): each channel's in
    /// order; answered each on its own.
    func publish(_ drafts: [Draft], logger: Logger) async -> [Result<Publication, Failure>] {
        let drafts = Self.withinNewChannelAllowance(drafts, gatekeeper: gatekeeper)
        // A capped room's place is asked once per channel of the batch; its refusal
        // answers every message to that room, which then is not published.
        var placeRefusals: [ChannelName: Failure?] = [:]
        for draft in drafts where needsPlace(draft) && placeRefusals[draft.channel] == nil {
            placeRefusals[draft.channel] = .some(await placeRefusal(draft))
        }
        let refusedIndices = Set(drafts.indices.filter { needsPlace(drafts[$0]) && placeRefusals[drafts[$0].channel].flatMap { $0 } != nil })
        let publishable = drafts.indices.filter { !refusedIndices.contains($0) }
        let started = NIODeadline.now()
        let published = await broker.publish(publishable.map { drafts[$0].request })
        let nanoseconds = (NIODeadline.now() - started).nanoseconds
        var results = [Result<Publication, BrokerError>?](repeating: nil, count: drafts.count)
        for (index, result) in zip(publishable, published) { results[index] = result }
        var answers: [Result<Publication, Failure>] = []
        answers.reserveCapacity(drafts.count)
        for (index, draft) in drafts.enumerated() {
            guard let result = results[index] else {
                answers.append(.failure(placeRefusals[draft.channel]!!))
                continue
            }
            let answer = self.answer(draft, result, inNanoseconds: nanoseconds)
            if case .success(let publication) = answer, let identity = draft.identity, !publication.isRepeat, draft.kind == .message {
                await notify(about: publication.message, from: identity, logger: logger)
            }
            answers.append(answer)
        }
        return answers
    }

    /// Publishes drafts as one batch from an event loop, answered on it: without a task,
    /// unless one of them needs what only ``publish(_:logger:)-batch`` does (a place to
    /// take in a capped room, a one-to-one room's inbox to tell).
    func publish(_ drafts: [Draft], on eventLoop: any EventLoop, logger: Logger) -> EventLoopFuture<[Result<Publication, Failure>]> {
        publishWithoutTask(drafts, on: eventLoop) ?? eventLoop.makeFutureWithTask { await publish(drafts, logger: logger) }
    }

    /// The batch through ``Broker/publish(_:on:)``, or `nil` when it needs a task.
    private func publishWithoutTask(_ drafts: [Draft], on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, Failure>]>? {
        guard !drafts.contains(where: { needsPlace($0) || tellsAnInbox($0) }) else { return nil }
        let drafts = Self.withinNewChannelAllowance(drafts, gatekeeper: gatekeeper)
        let started = NIODeadline.now()
        return broker.publish(drafts.map(\.request), on: eventLoop).map { published in
            let nanoseconds = (NIODeadline.now() - started).nanoseconds
            return zip(drafts, published).map { draft, result in self.answer(draft, result, inNanoseconds: nanoseconds) }
        }
    }

    /// A message of a one-to-one room from a person: its inbox hears of it.
    private func tellsAnInbox(_ draft: Draft) -> Bool {
        draft.identity != nil && draft.kind == .message && RoomPolicy.pair(of: draft.channel) != nil
    }

    /// The broker's result for one draft, as its sender is answered; counts it.
    private func answer(_ draft: Draft, _ result: Result<Publication, BrokerError>, inNanoseconds nanoseconds: Int64) -> Result<Publication, Failure> {
        switch result {
        case .success(let publication):
            metrics.published(inNanoseconds: nanoseconds)
            if publication.createdChannel { gatekeeper.tookNewChannel(from: draft.client) }
            return .success(publication)
        case .failure(let error):
            return .failure(failure(error, keyed: draft.key != nil))
        }
    }

    /// Each draft was allowed to create its channel on its own; together they may create
    /// only as many channels as the sender's allowance holds. The first channels of the
    /// batch keep the permission (all their messages alike); the others' messages are
    /// refused if their channel turns out to be new (429), as they would be one by one.
    static func withinNewChannelAllowance(_ drafts: [Draft], gatekeeper: Gatekeeper) -> [Draft] {
        var allowances: [String: Int] = [:]
        var permitted: [ChannelName: Bool] = [:]
        var drafts = drafts
        for index in drafts.indices where drafts[index].options.mayCreateChannel {
            let channel = drafts[index].channel
            if let decided = permitted[channel] {
                drafts[index].options.mayCreateChannel = decided
                continue
            }
            let client = drafts[index].client
            let left = allowances[client] ?? gatekeeper.newChannelAllowance(from: client)
            permitted[channel] = left > 0
            drafts[index].options.mayCreateChannel = left > 0
            allowances[client] = max(0, left - 1)
        }
        return drafts
    }

    /// A capped room takes posts only from its people: a poster who holds no place takes
    /// one if there is room (as a socket would), and is refused as a socket would be if
    /// not.
    private func placeRefusal(_ draft: Draft) async -> Failure? {
        guard needsPlace(draft), let cap = rooms.cap(of: draft.channel) else { return nil }
        guard let member = draft.identity else {
            let message = "This room holds a limited number of people and takes messages only from them: open the chat page first (it gives your browser an identity), then send again."
            return Failure(refusal: Refusal(.forbidden, message), reason: "identity_required", level: .info)
        }
        do {
            if try await broker.admit(member, to: draft.channel, instance: presence.instance, cap: cap, lifetime: presence.lifetime) { return nil }
        } catch let error as BrokerError {
            return failure(error, keyed: draft.key != nil)
        } catch {
            return Failure(refusal: Refusal(.internalServerError, "Message not sent: \(error)."), reason: "server_error", level: .error)
        }
        let message = "This room is full: it holds at most \(cap) \(cap == 1 ? "person" : "people"), and takes messages only from them."
        return Failure(refusal: Refusal(.forbidden, message), reason: "room_full", level: .info)
    }

    /// Whether the draft goes to a capped room whose place its sender does not hold yet.
    /// Editing or deleting one's own words needs none: that right is the author's.
    private func needsPlace(_ draft: Draft) -> Bool {
        guard rooms.cap(of: draft.channel) != nil, !draft.placeHeld else { return false }
        switch draft.kind {
        case .edit, .delete: return false
        case .message, .react: return true
        }
    }

    private func failure(_ error: BrokerError, keyed: Bool) -> Failure {
        switch error.kind {
        case .refused(let status):
            var refusal = Refusal(HTTPResponse.Status(code: status), error.message)
            if let wait = error.retryAfter { refusal.headers[.retryAfter] = String(wait) }
            return Failure(refusal: refusal, reason: error.reason ?? ChatMetrics.reason(status: status), level: .info)
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
