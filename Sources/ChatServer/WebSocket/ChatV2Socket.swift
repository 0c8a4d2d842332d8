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
        /// A moderator: may mute, ban and slow rooms down over the socket, delete anyone's
        /// message, and is exempt from slow mode.
        var moderator = false
    }

    var context: ChannelHandlerContext?
    let frameIndex: Int
    #if DEBUG
    private var connection: WebSocketStateMachine
    #else
    @exclusivity(unchecked) private var connection: WebSocketStateMachine
    #endif
    var subscriptions = Subscriptions()
    /// Sends waiting for the batch in flight to finish.
    var outbox: [(id: String, draft: Posting.Draft)] = []
    var publishing = false
    /// Reading stopped: the outbox is full (``outboxLimit``).
    var readsPaused = false
    /// The client shut its side while a batch was being published: close after its answers.
    var hangUpWhenPublished = false
    private let first: (channel: ChannelName, resume: DeliveryFlow.Resume?)?
    let person: Person
    /// A signed-in socket's token: who the site says the person is, until it expires.
    let lease: SignInLease?
    /// The person the site signed in, as their latest token says.
    var signIn: SignIn? { lease?.signIn }
    /// Whether the person moderates: named by `--moderators`, or their latest token says
    /// `role: "moderator"`.
    var isModerator: Bool { person.moderator || signIn?.isModerator == true }
    let hub: LoopHub
    let server: ChatServerContext
    private let queueLimit: Int
    let maximumSubscriptions: Int
    let closing: WebSocketEndpointSettings

    var logMetadata: Logger.Metadata { ["protocol": "chat.v2"] }
    private let maximumMessageSize: Int
    var logger: Logger { closing.logger }
    /// Made when asked rather than kept: an idle socket carries less.
    var admission: RoomAdmission { RoomAdmission(context: server, logger: logger) }
    var posting: Posting {
        Posting(
            broker: server.broker, gatekeeper: server.gatekeeper, maximumMessageSize: maximumMessageSize, rooms: server.rooms, presence: server.presence,
            metrics: server.metrics
        )
    }
    /// Whether the WebSocket is open (neither closing nor closed).
    var isOpen: Bool { connection.isOpen }

    init(
        first: (channel: ChannelName, resume: DeliveryFlow.Resume?)?,
        person: Person,
        lease: SignInLease? = nil,
        kind: FrameKind,
        hub: LoopHub,
        server: ChatServerContext,
        settings: Settings,
        client: String,
        logger: Logger
    ) {
        self.first = first
        self.person = person
        self.lease = lease
        self.frameIndex = kind.index
        self.hub = hub
        self.server = server
        self.maximumMessageSize = settings.maximumMessageSize
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
        if let lease {
            context.writeAndFlush(wrapOutboundOut(ChatV1.welcome(lease.signIn)), promise: nil)
            lease.start(on: context.eventLoop) { [weak self] in self?.tokenExpired() }
        }
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
        // A client that sent and then shut its side has its acks coming: hang up once
        // they are written.
        if case .some(.inputClosed) = event as? ChannelEvent {
            publishOutbox()
            if publishing {
                hangUpWhenPublished = true
                return
            }
        }
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
        case .change(let id, let channel, let change, let of):
            self.change(id: id, channel: channel, change: change, of: of, context: context)
        case .typing(let channel):
            typing(in: channel, context: context)
        case .read(let channel, let offset):
            read(channel, upTo: offset, context: context)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ChatV1.pong()), promise: nil)
        case .refresh(let token):
            refresh(token, context: context)
        case .who(let channel):
            guard let name = try? ChannelName(validating: channel), let subscription = subscriptions[name], subscription.announced else {
                refuseFrame("subscribe to \(Self.quoted(channel)) before asking who is there", context: context)
                return
            }
            let snapshot = subscription.hasPresence ? server.presence.snapshot(of: name) : nil
            context.writeAndFlush(
                wrapOutboundOut(ChatV1.members(channel: name, online: snapshot?.online ?? 0, members: snapshot?.members ?? [])), promise: nil
            )
        case .moderate(let id, let channel, let action):
            moderate(id: id, channel: channel, action: action, context: context)
        case .badSend(let id, let channel, let reason):
            nack(String(id.unicodeScalars.prefix(256)), channel, Refusal(.badRequest, reason), reason: "bad_request", context: context)
        case .badSubscribe(let channel, let reason):
            refuse(channel, Refusal(.badRequest, reason, closeCode: .badRequest), reason: "bad_request", context: context)
        case .invalid(let reason):
            refuseFrame(reason, context: context)
        }
    }

    func receivedBinary(_ data: ByteBuffer, context: ChannelHandlerContext) {
        close(.unsupportedData, "binary messages are not accepted; send text", context: context, refusal: "binary", log: "Closing a WebSocket that sent a binary message")
    }

    /// A frame the socket cannot act on: an `error` frame, and the socket stays open.
    func refuseFrame(_ reason: String, context: ChannelHandlerContext) {
        closing.refusals.record(
            "Refused a chat.v2 frame", route: "socket", reason: "bad_frame", client: closing.client, logger: logger, level: .debug,
            metadata: ["reason": "\(reason)"]
        )
        context.writeAndFlush(wrapOutboundOut(ChatV1.error(reason)), promise: nil)
    }

    private func tokenExpired() {
        guard let context else { return }
        closeForExpiredToken(context: context)
    }

    /// A newer token: the socket lives on until it expires. One for someone else, or
    /// one that does not verify, changes nothing (the client is told why).
    private func refresh(_ token: String, context: ChannelHandlerContext) {
        guard let lease else {
            refuseFrame("this socket did not sign in: there is no token to refresh", context: context)
            return
        }
        lease.refresh(token, on: context.eventLoop).whenSuccess { result in
            guard self.isOpen, let context = self.context else { return }
            self.answer(refresh: result, context: context)
            // A newer token may open fewer rooms: the others end now, as if refused.
            guard case .success(let signIn) = result else { return }
            for subscription in self.subscriptions.values {
                guard let outside = signIn.refusal(for: subscription.channel) else { continue }
                self.subscriptions[subscription.channel] = nil
                self.end(subscription)
                self.refuse(subscription.channel.rawValue, outside, reason: "forbidden", context: context)
            }
        }
    }

    private func leave() {
        guard context != nil else { return }
        lease?.end()
        context = nil
        connection.hungUp()
        hub.removeConnection(self)
        let open = subscriptions.values
        subscriptions = Subscriptions()
        outbox = []
        for subscription in open { end(subscription) }
    }

    static func quoted(_ channel: String) -> String {
        "'\(String(channel.unicodeScalars.prefix(64)))'"
    }
}
