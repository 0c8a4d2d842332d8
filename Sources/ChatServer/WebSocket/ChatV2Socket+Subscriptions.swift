import Chat
import HTTPTypes
import Logging
import NIOCore

/// A chat.v2 socket's subscriptions: admitted one by one with the room rules, each
/// delivered through its own flow, resumed from its own offset.
extension ChatV2Socket {
    func subscribe(_ requested: String, resume: DeliveryFlow.Resume?, context: ChannelHandlerContext) {
        let channel: ChannelName
        do {
            channel = try ChannelName(validating: requested)
        } catch {
            refuse(requested, Refusal(.badRequest, "Invalid channel name: \(error.reason).", closeCode: .badRequest), reason: "bad_request", context: context)
            return
        }
        if subscriptions[channel] != nil {
            refuseFrame("already subscribed to \(channel); unsubscribe first", context: context)
            return
        }
        guard subscriptions.count < maximumSubscriptions else {
            let message = "Too many subscriptions: a socket holds at most \(maximumSubscriptions); unsubscribe from one first."
            refuse(requested, Refusal(.tooManyRequests, message, closeCode: .tooManyRequests), reason: "too_many_subscriptions", context: context)
            return
        }
        if let signIn {
            if let outside = signIn.refusal(for: channel) {
                refuse(requested, outside, reason: "forbidden", context: context)
                return
            }
        } else if let problem = server.gatekeeper.checkConnectToken(person.token, channel: channel) {
            refuse(requested, Refusal(.unauthorized, problem.description, closeCode: .identityRequired), reason: "unauthorized", context: context)
            return
        }
        let ask = RoomAdmission.Ask(channel: channel, member: person.member.id, verified: person.verified, resumes: resume != nil, client: closing.client)
        if let refused = admission.check(ask) {
            refuse(requested, refused.refusal, reason: refused.reason, context: context)
            return
        }
        if let refusal = server.gatekeeper.admitChannel(channel) {
            refuse(requested, Refusal(refusal.status, refusal.message, closeCode: .unavailable), reason: "unavailable", context: context)
            return
        }
        let subscription = Subscription(channel: channel, resume: resume, hasPresence: RoomPolicy.owner(ofInbox: channel) == nil, owner: self)
        subscriptions[channel] = subscription
        admission.admit(ask, on: context.eventLoop).assumeIsolated().whenComplete { result in
            self.admitted(subscription, result)
        }
    }

    private func admitted(_ subscription: Subscription, _ result: Result<RoomAdmission.Admitted, any Error>) {
        let admitted = (try? result.get()) ?? RoomAdmission.Admitted(refused: nil, joined: false)
        subscription.joined = admitted.joined
        // Unsubscribed, or the socket closed, while it was being admitted: what it was
        // counted for is released already; the join is released now.
        guard let context, isOpen, subscriptions[subscription.channel] === subscription else {
            if subscription.joined { server.broker.leave(subscription.channel) }
            return
        }
        let refused: RoomAdmission.Refused
        switch result {
        case .success(let admitted):
            guard let failure = admitted.refused else {
                open(subscription, context: context)
                return
            }
            refused = failure
        case .failure(let error):
            refused = RoomAdmission.Refused(
                refusal: Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", closeCode: .unavailable),
                reason: "unavailable"
            )
        }
        subscriptions[subscription.channel] = nil
        end(subscription)
        refuse(subscription.channel.rawValue, refused.refusal, reason: refused.reason, context: context)
    }

    /// In the hub first, then where the history and the person's read state stand, read
    /// side by side (the first history read at once, so that it is shared with the others
    /// that start now): whatever is published meanwhile (a message, a `read` from another
    /// tab) waits in the flow and is either in what is read or after it. `subscribed` goes
    /// once both are known.
    private func open(_ subscription: Subscription, context: ChannelHandlerContext) {
        subscription.opened()
        hub.add(subscription, to: subscription.channel)
        if subscription.hasPresence {
            server.presence.join(subscription.channel, member: person.member)
        }
        let first = subscription.flow.opened(resume: subscription.resume) ?? subscription.flow.openedAtPosition()
        let start = FirstReads()
        server.reads.read(first, of: subscription.channel, for: hub) { result in
            start.history = result
            start.both.map { self.historyRead($0.history, for: subscription, read: $0.read, seen: $0.seen) }
        }
        readState(of: subscription, context: context) { read, seen in
            start.readState = (read, seen)
            start.both.map { self.historyRead($0.history, for: subscription, read: $0.read, seen: $0.seen) }
        }
    }

    /// What a subscription's start waits for: its first history read and its read state.
    /// Used on the socket's event loop only.
    private final class FirstReads {
        var history: Result<History, any Error>?
        var readState: (read: Int64, seen: Int64?)?

        /// Both, once both came.
        var both: (history: Result<History, any Error>, read: Int64, seen: Int64?)? {
            guard let history, let readState else { return nil }
            return (history, readState.read, readState.seen)
        }
    }

    /// How far the person has read the channel, for `subscribed`, and in a one-to-one
    /// room how far the other person has (`seen`). An identity minted with this socket has
    /// read nothing yet (and is no one's other person: a one-to-one room needs a proven
    /// identity), so only a proven one is looked up.
    private func readState(of subscription: Subscription, context: ChannelHandlerContext, then: @escaping (Int64, Int64?) -> Void) {
        let channel = subscription.channel
        guard let me = person.verified else {
            then(0, nil)
            return
        }
        let other = RoomPolicy.pair(of: channel).map { $0.0 == me ? $0.1 : $0.0 }
        server.readStates.read([me] + (other.map { [$0] } ?? []), of: channel, on: context.eventLoop) { result in
            guard let context = self.context, self.isOpen, subscription.state == .open, self.subscriptions[channel] === subscription else { return }
            switch result {
            case .success(let states):
                then(states[me] ?? 0, other.map { states[$0] ?? 0 })
            case .failure(let error):
                self.subscriptions[channel] = nil
                self.end(subscription)
                let refusal = Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", closeCode: .unavailable)
                self.refuse(channel.rawValue, refusal, reason: "unavailable", context: context)
            }
        }
    }

    func unsubscribe(_ requested: String, context: ChannelHandlerContext) {
        if let channel = try? ChannelName(validating: requested), let subscription = subscriptions.removeValue(forKey: channel) {
            end(subscription)
        }
        context.writeAndFlush(wrapOutboundOut(ChatV2.unsubscribed(channel: String(requested.unicodeScalars.prefix(64)))), promise: nil)
    }

    /// Takes a subscription out of the hub and the room, and releases what it held: its
    /// channel count, and the broker's join once it was made (one still being admitted
    /// releases its join when the admission answers). The caller has removed it from
    /// ``subscriptions``.
    func end(_ subscription: Subscription) {
        subscription.release(from: hub, server: server, person: person.member.id)
    }

    func refuse(_ channel: String, _ refusal: Refusal, reason: String, context: ChannelHandlerContext) {
        let shown = String(channel.unicodeScalars.prefix(64))
        closing.refusals.record(
            "Refused a chat.v2 subscription", route: "socket", reason: reason, client: closing.client, logger: logger,
            metadata: ["channel": "\(shown)", "reason": "\(refusal.message)"]
        )
        let code = refusal.closeCode ?? .unavailable
        context.writeAndFlush(
            wrapOutboundOut(ChatV2.refused(channel: shown, code: code.rawValue, message: refusal.message, until: refusal.until, reason: reason)), promise: nil
        )
    }


    // MARK: - Moderation

    /// A ban ends the subscription (`refused` 4403; the socket stays open for its other
    /// rooms); a mute is told (`muted`).
    func moderated(_ delivery: Delivery, of subscription: Subscription) {
        guard isOpen, let context, subscription.state == .open, subscriptions[subscription.channel] === subscription else { return }
        switch delivery.event {
        case .moderation(_, .banned(_, let until)):
            subscriptions[subscription.channel] = nil
            end(subscription)
            var refusal = Refusal(.forbidden, RoomModeration.bannedWords, closeCode: .banned)
            if until > 0 { refusal.until = until }
            refuse(subscription.channel.rawValue, refusal, reason: "banned", context: context)
        case .moderation(_, .muted(_, let until)):
            subscription.mutedUntil = until
            if let frame = delivery.frames[frameIndex] { context.writeAndFlush(wrapOutboundOut(frame), promise: nil) }
        default:
            break
        }
    }

    // MARK: - Deliveries

    /// A batch of one subscription's channel.
    func deliver(_ batch: Batch, to subscription: Subscription) {
        guard isOpen, let context, subscription.state == .open else { return }
        let action = subscription.flow.isLive ? .writeJoined : subscription.flow.batchArrived(batch.deliveries)
        switch action {
        case .writeJoined:
            guard let frames = batch.frames(format: frameIndex) else { return }
            guard isWritable(context) else {
                subscription.flow.fellBehind(batch.deliveries.lazy.map(\.event))
                fellBehind(subscription, dropped: batch.deliveries.count)
                return
            }
            context.writeAndFlush(wrapOutboundOut(frames), promise: nil)
        case .offerEach:
            if offerLive(batch.deliveries, frameIndex: frameIndex, through: subscription, context: context) > 0 {
                fellBehind(subscription, dropped: 1)
            }
            context.flush()
        case .held:
            break
        case .dropped:
            server.metrics.dropped(.slowReader, count: batch.deliveries.count)
        }
    }

    /// The socket holds more than the queue limit unsent: this subscription's messages
    /// are dropped until it drains, then it is told the range (a `gap`).
    private func fellBehind(_ subscription: Subscription, dropped: Int) {
        server.metrics.queueOverflow(protocol: "chat.v2")
        server.metrics.dropped(.slowReader, count: dropped)
        logger.info("A chat.v2 reader fell behind; dropping its messages until it catches up", metadata: ["channel": "\(subscription.channel)"])
    }

    // MARK: - Where a subscription starts

    private func readHistory(_ read: DeliveryFlow.HistoryRead, for subscription: Subscription, context: ChannelHandlerContext) {
        subscription.readHistory(read, from: server.reads, on: context.eventLoop) { result in
            self.historyRead(result, for: subscription)
        }
    }

    private func historyRead(_ result: Result<History, any Error>, for subscription: Subscription, read: Int64 = 0, seen: Int64? = nil) {
        guard isOpen, let context, subscription.state == .open, subscriptions[subscription.channel] === subscription else { return }
        if !subscription.announced, case .success(let history) = result {
            subscription.announced = true
            context.write(
                wrapOutboundOut(
                    ChatV2.subscribed(channel: subscription.channel, epoch: history.epoch, offset: history.lastOffset, read: read, seen: seen)
                ),
                promise: nil
            )
            if subscription.hasPresence, let frame = server.presence.membersFrames(of: subscription.channel)?[frameIndex] {
                context.write(wrapOutboundOut(frame), promise: nil)
            }
            // A muted person learns it again (a reload): the admission has just read the room.
            if let until = server.moderations.kept(subscription.channel)?.mutedUntil(person.member.id, now: RoomModeration.now) {
                subscription.mutedUntil = until
                context.write(wrapOutboundOut(ChatV1.muted(channel: subscription.channel, until: until)), promise: nil)
            }
        }
        var behind = 0
        let outcome = replay(result, frameIndex: frameIndex, through: subscription, context: context, fellBehind: &behind)
        if behind > 0 { fellBehind(subscription, dropped: behind) }
        switch outcome {
        case .done:
            break
        case .readNext(let next):
            readHistory(next, for: subscription, context: context)
        case .failed(let error):
            logger.warning("Cannot start a subscription: the history is unavailable", metadata: ["channel": "\(subscription.channel)", "error": "\(error)"])
            subscriptions[subscription.channel] = nil
            end(subscription)
            let message = "The history of \(subscription.channel) cannot be read now (\(error)); subscribe again to resume."
            refuse(subscription.channel.rawValue, Refusal(.serviceUnavailable, message, closeCode: .unavailable), reason: "unavailable", context: context)
        }
    }
}
