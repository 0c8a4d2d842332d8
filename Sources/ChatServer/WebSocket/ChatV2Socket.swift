import Chat
import HTTPTypes
import Logging
import NIOCore
import NIOWebSocket

/// One chat.v2 WebSocket: any number of subscriptions on one connection, and messages
/// sent over it with acknowledgements (docs/PROTOCOL.md).
///
/// Each channel is a ``Subscription``, a member of the hub with its own
/// ``DeliveryFlow``; the socket admits them (the same rules as a chat.v1 upgrade, each
/// refusal a `refused` frame that leaves the socket open), carries out their flows'
/// actions and publishes what the client sends, one batch at a time so that a socket's
/// messages reach the broker in the order they came.
final class ChatV2Socket: WebSocketEndpoint, HubConnection {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    struct Settings: Sendable {
        /// Largest message text a `send` may carry.
        var maximumMessageSize: Int
        /// Largest frame (a `send` frame holds its text JSON-escaped).
        var maximumFrameSize: Int
        var closeTimeout: TimeAmount
        /// Bytes that may wait for a slow reader before its messages are dropped.
        var queueLimit: Int
        /// Frames a second the client may send, and the burst; `nil`: no limit.
        var messageRate: RateLimit?
        var maximumSubscriptions: Int
    }

    /// Who the socket is.
    struct Person: Sendable {
        var member: Member
        /// The identity its `uid` cookie proved.
        var verified: String?
        /// The connect token it came with.
        var token: String?
    }

    private var context: ChannelHandlerContext?
    private let frameIndex: Int
    #if DEBUG
    private var connection: WebSocketStateMachine
    #else
    @exclusivity(unchecked) private var connection: WebSocketStateMachine
    #endif
    private var subscriptions: [ChannelName: Subscription] = [:]
    /// Sends waiting for the batch in flight to finish.
    private var outbox: [(id: String, draft: Posting.Draft)] = []
    private var publishing = false
    private let first: (channel: ChannelName, resume: DeliveryFlow.Resume?)?
    private let person: Person
    private let hub: LoopHub
    private let server: ChatServerContext
    private let admission: RoomAdmission
    private let posting: Posting
    private let queueLimit: Int
    private let maximumSubscriptions: Int
    let closing: WebSocketEndpointSettings

    var logMetadata: Logger.Metadata { ["protocol": "chat.v2"] }
    private var logger: Logger { closing.logger }

    init(
        first: (channel: ChannelName, resume: DeliveryFlow.Resume?)?,
        person: Person,
        kind: FrameKind,
        hub: LoopHub,
        server: ChatServerContext,
        settings: Settings,
        client: String,
        logger: Logger
    ) {
        self.first = first
        self.person = person
        self.frameIndex = kind.index
        self.hub = hub
        self.server = server
        self.admission = RoomAdmission(context: server, logger: logger)
        self.posting = Posting(broker: server.broker, gatekeeper: server.gatekeeper, maximumMessageSize: settings.maximumMessageSize, metrics: server.metrics)
        self.queueLimit = settings.queueLimit
        self.maximumSubscriptions = settings.maximumSubscriptions
        self.closing = WebSocketEndpointSettings(
            maximumMessageSize: settings.maximumFrameSize, closeTimeout: settings.closeTimeout, messageRate: settings.messageRate,
            refusals: server.refusals, client: client, logger: logger
        )
        self.connection = WebSocketStateMachine(
            assembler: MessageAssembler(
                maximumMessageSize: settings.maximumFrameSize,
                inflater: kind.deflate.map { PerMessageDeflate.Inflater(keepsContext: !$0.clientNoContextTakeover) }
            ),
            messageRate: settings.messageRate
        )
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        context.channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: queueLimit / 2, high: queueLimit)).whenFailure { _ in }
        hub.addConnection(self)
        if let first { subscribe(first.channel.rawValue, resume: first.resume, context: context) }
        logger.debug("WebSocket open", metadata: ["protocol": "chat.v2", "deflate": "\(frameIndex != WireFormat.chatV1.rawValue)"])
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        logger.debug("WebSocket closed", metadata: logMetadata)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if connection.isOpen, context.channel.isWritable {
            var told = false
            for subscription in subscriptions.values where subscription.state == .open {
                guard let missed = subscription.flow.drained() else { continue }
                writeMissed(missed, of: subscription.channel, context: context)
                told = true
            }
            if told { context.flush() }
        }
        context.fireChannelWritabilityChanged()
    }

    func connectionReceived(_ frame: WebSocketFrame) -> WebSocketStateMachine.Inbound { connection.received(frame) }
    func connectionClose() -> Bool { connection.close() }
    func connectionHungUp() { connection.hungUp() }
    func connectionHeartbeat() -> WebSocketStateMachine.Heartbeat { connection.heartbeat() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readFrame(unwrapInboundIn(data), context: context)
    }

    /// The end of one read: what the client sent in it goes to the broker as one batch.
    func channelReadComplete(context: ChannelHandlerContext) {
        publishOutbox()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !closedIfInputEnded(event, context: context) { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        frameErrorCaught(context: context, error: error)
    }

    // MARK: - Hub connection

    func goAway() {
        guard let context else { return }
        close(.goingAway, "server shutting down; reconnect", context: context)
    }

    func heartbeat(now: NIODeadline) {
        guard let context else { return }
        beat(context: context)
    }

    // MARK: - What the client sends

    func receivedText(_ text: String, context: ChannelHandlerContext) {
        switch ChatV2Request(text) {
        case .subscribe(let channel, let resume):
            subscribe(channel, resume: resume.map { DeliveryFlow.Resume(after: $0.since, epoch: $0.epoch) }, context: context)
        case .unsubscribe(let channel):
            unsubscribe(channel, context: context)
        case .send(let id, let channel, let data, let name):
            send(id: id, channel: channel, data: data, name: name, context: context)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ChatV1.pong()), promise: nil)
        case .who(let channel):
            guard let name = try? ChannelName(validating: channel), let subscription = subscriptions[name], subscription.announced else {
                refuseFrame("subscribe to \(Self.quoted(channel)) before asking who is there", context: context)
                return
            }
            let snapshot = subscription.hasPresence ? server.presence.snapshot(of: name) : nil
            context.writeAndFlush(
                wrapOutboundOut(ChatV1.members(channel: name, online: snapshot?.online ?? 0, members: snapshot?.members ?? [])), promise: nil
            )
        case .invalid(let reason):
            refuseFrame(reason, context: context)
        }
    }

    func receivedBinary(_ data: ByteBuffer, context: ChannelHandlerContext) {
        close(.unsupportedData, "binary messages are not accepted; send text", context: context, refusal: "binary", log: "Closing a WebSocket that sent a binary message")
    }

    /// A frame the socket cannot act on: an `error` frame, and the socket stays open.
    private func refuseFrame(_ reason: String, context: ChannelHandlerContext) {
        closing.refusals.record(
            "Refused a chat.v2 frame", route: "socket", reason: "bad_frame", client: closing.client, logger: logger, level: .debug,
            metadata: ["reason": "\(reason)"]
        )
        context.writeAndFlush(wrapOutboundOut(ChatV1.error(reason)), promise: nil)
    }

    // MARK: - Subscriptions

    private func subscribe(_ requested: String, resume: DeliveryFlow.Resume?, context: ChannelHandlerContext) {
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
        if let problem = server.gatekeeper.checkConnectToken(person.token, channel: channel) {
            refuse(requested, Refusal(.unauthorized, problem.description, closeCode: .identityRequired), reason: "unauthorized", context: context)
            return
        }
        let ask = RoomAdmission.Ask(channel: channel, member: person.member.id, verified: person.verified, resumes: resume != nil, client: closing.client)
        if let refused = admission.check(ask) {
            refuse(requested, refused.refusal, reason: refused.reason, context: context)
            return
        }
        let subscription = Subscription(
            channel: channel, resume: resume, hasPresence: RoomPolicy.owner(ofInbox: channel) == nil, socket: self, eventLoop: context.eventLoop
        )
        if let refusal = server.gatekeeper.admitChannel(channel, until: subscription.ended.futureResult) {
            subscription.end()
            refuse(requested, Refusal(refusal.status, refusal.message, closeCode: .unavailable), reason: "unavailable", context: context)
            return
        }
        subscriptions[channel] = subscription
        admission.admit(ask, on: context.eventLoop, until: subscription.ended.futureResult).assumeIsolated().whenComplete { result in
            self.admitted(subscription, result)
        }
    }

    private func admitted(_ subscription: Subscription, _ result: Result<Result<Void, RoomAdmission.Refused>, any Error>) {
        // Unsubscribed, or the socket closed, while it was being admitted.
        guard let context, connection.isOpen, subscriptions[subscription.channel] === subscription else {
            subscription.end()
            return
        }
        let refused: RoomAdmission.Refused
        switch result {
        case .success(.success):
            open(subscription, context: context)
            return
        case .success(.failure(let failure)):
            refused = failure
        case .failure(let error):
            refused = RoomAdmission.Refused(
                refusal: Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", closeCode: .unavailable),
                reason: "unavailable"
            )
        }
        subscriptions[subscription.channel] = nil
        subscription.end()
        refuse(subscription.channel.rawValue, refused.refusal, reason: refused.reason, context: context)
    }

    /// In the hub first, then the history read: whatever is published meanwhile waits in
    /// the flow and is either in the read or after it.
    private func open(_ subscription: Subscription, context: ChannelHandlerContext) {
        subscription.opened()
        hub.add(subscription, to: subscription.channel)
        if subscription.hasPresence {
            server.presence.join(subscription.channel, member: person.member)
        }
        let read = subscription.flow.opened(resume: subscription.resume) ?? subscription.flow.openedAtPosition()
        // The first read is shared with the others that start on this loop now.
        server.reads.read(read, of: subscription.channel, for: hub) { result in
            self.historyRead(result, for: subscription)
        }
    }

    private func unsubscribe(_ requested: String, context: ChannelHandlerContext) {
        if let channel = try? ChannelName(validating: requested), let subscription = subscriptions.removeValue(forKey: channel) {
            end(subscription)
        }
        context.writeAndFlush(wrapOutboundOut(ChatV2.unsubscribed(channel: String(requested.unicodeScalars.prefix(64)))), promise: nil)
    }

    /// Takes a subscription out of the hub and the room (the caller has removed it from
    /// ``subscriptions``).
    private func end(_ subscription: Subscription) {
        if subscription.state == .open {
            hub.remove(subscription, from: subscription.channel)
            if subscription.hasPresence { server.presence.leave(subscription.channel, id: person.member.id) }
        }
        subscription.end()
    }

    private func refuse(_ channel: String, _ refusal: Refusal, reason: String, context: ChannelHandlerContext) {
        let shown = String(channel.unicodeScalars.prefix(64))
        closing.refusals.record(
            "Refused a chat.v2 subscription", route: "socket", reason: reason, client: closing.client, logger: logger,
            metadata: ["channel": "\(shown)", "reason": "\(refusal.message)"]
        )
        let code = refusal.closeCode ?? .unavailable
        context.writeAndFlush(wrapOutboundOut(ChatV2.refused(channel: shown, code: code.rawValue, message: refusal.message)), promise: nil)
    }

    private func leave() {
        guard context != nil else { return }
        context = nil
        connection.hungUp()
        hub.removeConnection(self)
        let open = subscriptions.values
        subscriptions = [:]
        outbox = []
        for subscription in open { end(subscription) }
    }

    // MARK: - Deliveries

    /// A batch of one subscription's channel.
    func deliver(_ batch: Batch, to subscription: Subscription) {
        guard connection.isOpen, let context, subscription.state == .open else { return }
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
        let broker = server.broker
        let channel = subscription.channel
        context.eventLoop.makeFutureWithTask {
            try await broker.history(of: channel, after: read.after, limit: read.limit)
        }.assumeIsolated().whenComplete { result in
            self.historyRead(result, for: subscription)
        }
    }

    private func historyRead(_ result: Result<History, any Error>, for subscription: Subscription) {
        guard connection.isOpen, let context, subscription.state == .open, subscriptions[subscription.channel] === subscription else { return }
        if !subscription.announced, case .success(let history) = result {
            subscription.announced = true
            context.write(
                wrapOutboundOut(ChatV2.subscribed(channel: subscription.channel, epoch: history.epoch, offset: history.lastOffset)), promise: nil
            )
            if subscription.hasPresence, let snapshot = server.presence.snapshot(of: subscription.channel), let members = snapshot.members {
                context.write(wrapOutboundOut(ChatV1.members(channel: subscription.channel, online: snapshot.online, members: members)), promise: nil)
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

    // MARK: - Sending

    private func send(id: String, channel: String, data: String, name: String?, context: ChannelHandlerContext) {
        let gatekeeper = server.gatekeeper
        // With --publish-token, messages come only from those who hold it, at POST /send/.
        guard gatekeeper.allowsPublish(authorization: nil, tokenField: nil) else {
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
        switch posting.draft(data: data, channel: channel, name: name, key: id, identity: person.verified, client: closing.client) {
        case .success(let draft):
            outbox.append((id, draft))
        case .failure(let refusal):
            nack(id, channel, refusal, reason: ChatMetrics.reason(status: refusal.status.code), context: context)
        }
    }

    /// Publishes what waits, in order, unless a batch is in flight (it follows that one).
    private func publishOutbox() {
        guard !publishing, !outbox.isEmpty, let context else { return }
        publishing = true
        let batch = outbox
        outbox = []
        let posting = self.posting
        let logger = self.logger
        context.eventLoop.makeFutureWithTask {
            await posting.publish(batch.map(\.draft), logger: logger)
        }.assumeIsolated().whenSuccess { results in
            self.published(batch, results)
        }
    }

    private func published(_ batch: [(id: String, draft: Posting.Draft)], _ results: [Result<Publication, Posting.Failure>]) {
        publishing = false
        guard connection.isOpen, let context else { return }
        for ((id, draft), result) in zip(batch, results) {
            switch result {
            case .success(let publication):
                context.write(wrapOutboundOut(ChatV2.ack(id: id, message: publication.message)), promise: nil)
            case .failure(let failure):
                nack(id, draft.channel.rawValue, failure.refusal, reason: failure.reason, level: failure.level, context: context, flush: false)
            }
        }
        context.flush()
        publishOutbox()
    }

    private func nack(
        _ id: String, _ channel: String, _ refusal: Refusal, reason: String, level: Logger.Level = .info, context: ChannelHandlerContext, flush: Bool = true
    ) {
        let shown = String(channel.unicodeScalars.prefix(64))
        closing.refusals.record(
            "Refused a message", route: "socket", reason: reason, client: closing.client, logger: logger, level: level,
            metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.message)", "channel": "\(shown)"]
        )
        let frame = ChatV2.nack(id: id, channel: shown, status: refusal.status.code, message: refusal.message, retryAfter: refusal.headers[.retryAfter])
        if flush {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(wrapOutboundOut(frame), promise: nil)
        }
    }

    private static func quoted(_ channel: String) -> String {
        "'\(String(channel.unicodeScalars.prefix(64)))'"
    }
}
