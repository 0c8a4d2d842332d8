import Chat
import HTTPTypes
import Logging
import NIOCore

/// A chat.v2 socket's sends: drafted with the rules of `POST /send/`, published one batch
/// per read, in order, each answered with `ack` or `nack`.
extension ChatV2Socket {
    func send(id: String, channel: String, data: String?, name: String?, kind: MessageKind = .message, context: ChannelHandlerContext) {
        let gatekeeper = server.gatekeeper
        // With --publish-token, messages come only from those who hold it, at POST /send/.
        guard gatekeeper.allowsPublish(bearer: nil, tokenField: nil) else {
            nack(id, channel, Refusal(.unauthorized, "This server takes messages only at POST /send/ with its publish token."), reason: "unauthorized", context: context)
            return
        }
        if let wait = gatekeeper.takeSend(from: closing.client) {
            let tooMany = Gatekeeper.tooMany("messages", rate: gatekeeper.settings.sendRate, wait: wait)
            var refusal = Refusal(.tooManyRequests, tooMany.message)
            refusal.headers[.retryAfter] = tooMany.retryAfter
            nack(id, channel, refusal, reason: "rate_limited", context: context)
            return
        }
        guard IdempotencyKey.isValid(id) else {
            let refusal = Refusal(.badRequest, "Invalid id: 1–\(IdempotencyKey.maximumLength) characters of A–Z a–z 0–9 _ -.")
            nack(String(id.unicodeScalars.prefix(256)), channel, refusal, reason: "bad_request", context: context)
            return
        }
        // A signed-in person shows their token's name, whatever the frame says.
        let shownName = lease.map { $0.signIn.name } ?? name
        switch posting.draft(
            data: data, channel: channel, name: shownName, key: id, identity: person.verified, client: closing.client, from: person.member.id, kind: kind,
            signIn: signIn
        ) {
        case .success(var draft):
            // A subscription that holds its place in a capped room: the socket's person is one of its people.
            draft.placeHeld = subscriptions[draft.channel].map { $0.state == .open } ?? false
            draft.moderator = isModerator
            outbox.append((id, draft))
            // Enough waits: read no more from this client until the broker has taken them
            // (TCP holds back the rest), so what waits stays bounded.
            if outbox.count >= Self.outboxLimit, !readsPaused {
                readsPaused = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            }
        case .failure(let refusal):
            nack(id, channel, refusal, reason: ChatMetrics.reason(status: refusal.status.code), context: context)
        }
    }

    /// An edit, delete or reaction: published like a send, in the same order, with the
    /// same idempotency; the broker checks it against its message.
    func change(id: String, channel: String, change: ChatV2Request.Change, of: Int64, context: ChannelHandlerContext) {
        switch change {
        case .edit(let data): send(id: id, channel: channel, data: data, name: nil, kind: .edit(of: of), context: context)
        case .delete: send(id: id, channel: channel, data: nil, name: nil, kind: .delete(of: of), context: context)
        case .react(let emoji):
            // A reaction is a person's: a socket without a proven identity would be a new
            // one on every connection, and could pile reactions onto a message alone.
            guard person.verified != nil else {
                let refusal = Refusal(.forbidden, "Reacting needs an identity: open the chat page first (it gives your browser one), then connect again.")
                nack(String(id.unicodeScalars.prefix(256)), channel, refusal, reason: "identity_required", context: context)
                return
            }
            send(id: id, channel: channel, data: emoji, name: nil, kind: .react(of: of, on: true), context: context)
        }
    }

    /// Relays that the person is typing, to the others subscribed on every instance: at
    /// most once per person and room every 2 s (more are dropped without a word).
    func typing(in channel: String, context: ChannelHandlerContext) {
        guard let subscription = subscribed(channel, for: "typing", context: context) else { return }
        // A muted person's typing would announce words that cannot come.
        if subscription.mutedUntil > RoomModeration.now { return }
        guard server.gatekeeper.mayRelayTyping(person.member.id, in: subscription.channel, from: closing.client) else { return }
        let (broker, member, name, logger) = (server.broker, person.member, subscription.channel, logger)
        Task {
            do {
                try await broker.typing(member, in: name)
            } catch {
                logger.debug("Could not relay typing", metadata: ["channel": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Moves the person's read state in a channel forward; every socket of theirs is told
    /// (`read`), and in a one-to-one room the other person (`seen`). A socket without a
    /// proven identity (no `uid` cookie) is a person only while it is open: its read
    /// state is not kept.
    func read(_ channel: String, upTo offset: Int64, context: ChannelHandlerContext) {
        guard let subscription = subscribed(channel, for: "read", context: context) else { return }
        guard person.verified != nil else { return }
        let (broker, member, name) = (server.broker, person.member, subscription.channel)
        context.eventLoop.makeFutureWithTask {
            try await broker.markRead(member, in: name, upTo: offset)
        }.assumeIsolated().whenFailure { error in
            // Said to the client, and logged (throttled) as a refused frame.
            guard self.isOpen, let context = self.context else { return }
            self.refuseFrame("your read state in \(name) was not kept (\(error)); send it again", context: context)
        }
    }

    /// The subscription a frame about `channel` needs, or `nil` after saying so.
    private func subscribed(_ channel: String, for type: String, context: ChannelHandlerContext) -> Subscription? {
        guard let name = try? ChannelName(validating: channel), let subscription = subscriptions[name], subscription.announced else {
            refuseFrame("subscribe to \(Self.quoted(channel)) before sending \"\(type)\" frames about it", context: context)
            return nil
        }
        return subscription
    }

    /// Sends that may wait while a batch is published; past them the socket stops reading.
    static let outboxLimit = 256

    /// Publishes what waits, in order, unless a batch is in flight (it follows that one).
    func publishOutbox() {
        guard !publishing, !outbox.isEmpty, let context else { return }
        publishing = true
        let batch = outbox
        outbox = []
        if readsPaused {
            readsPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
        let posting = self.posting
        let logger = self.logger
        posting.publish(batch.map(\.draft), on: context.eventLoop, logger: logger).assumeIsolated().whenSuccess { results in
            self.published(batch, results)
        }
    }

    private func published(_ batch: [(id: String, draft: Posting.Draft)], _ results: [Result<Publication, Posting.Failure>]) {
        publishing = false
        guard isOpen, let context else { return }
        for ((id, draft), result) in zip(batch, results) {
            switch result {
            case .success(let publication):
                context.write(wrapOutboundOut(ChatV2.ack(id: id, message: publication.message)), promise: nil)
            case .failure(let failure):
                nack(id, draft.channel.rawValue, failure.refusal, reason: failure.reason, level: failure.level, context: context, flush: false)
            }
        }
        context.flush()
        if hangUpWhenPublished {
            _ = closedIfInputEnded(ChannelEvent.inputClosed, context: context)
            return
        }
        publishOutbox()
    }

    func nack(
        _ id: String, _ channel: String, _ refusal: Refusal, reason: String, level: Logger.Level = .info, context: ChannelHandlerContext, flush: Bool = true
    ) {
        let shown = String(channel.unicodeScalars.prefix(64))
        closing.refusals.record(
            "Refused a message", route: "socket", reason: reason, client: closing.client, logger: logger, level: level,
            metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.message)", "channel": "\(shown)"]
        )
        let frame = ChatV2.nack(
            id: id, channel: shown, status: refusal.status.code, message: refusal.message, retryAfter: refusal.headers[.retryAfter], reason: reason
        )
        if flush {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(wrapOutboundOut(frame), promise: nil)
        }
    }
}
