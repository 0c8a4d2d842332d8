import NIOCore
import ServiceLifecycle

/// Stores and publishes messages, and feeds each instance the channels it serves.
///
/// Two implementations share one behaviour: ``RedisBroker`` connects any number of
/// instances through Redis; ``MemoryBroker`` serves a single instance without Redis.
public protocol Broker: Sendable, CustomStringConvertible {
    /// Hands a message (or a change to one) to the broker. Returns only once the broker
    /// has accepted it (or found an earlier publish with the same idempotency key).
    ///
    /// A change is checked against its message atomically: it must be in the history, a
    /// message, and for an edit or delete the sender's own (an edit within
    /// ``HistoryPolicy/editWindow``).
    /// - Throws: ``BrokerError``: nothing was published when it throws `.unavailable`,
    ///   `.failed`, `.newChannelRefused` or `.refused`; with `.unconfirmed` it may have been.
    func publish(_ request: PublishRequest) async throws -> Publication

    /// Publishes several messages: those of one channel in the order given, each
    /// answered on its own, as ``publish(_:)`` would answer it. Messages of one channel
    /// after one that failed are not attempted (they fail with `.unavailable`), so that a
    /// retry cannot put them before it; a change its message refused (`.refused`, which
    /// no one retries) stops nothing.
    func publish(_ batch: [PublishRequest]) async -> [Result<Publication, BrokerError>]

    /// ``publish(_:)-batch`` without a task: started from `eventLoop` and answered on it
    /// (with Redis the scripts are written from there; the memory broker answers at once).
    /// The future never fails: each message's failure is in its result.
    func publish(_ batch: [PublishRequest], on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, BrokerError>]>

    /// Reads the channel's history: the messages after `offset` (oldest first), or the
    /// newest `limit` messages when `offset` is `nil`.
    /// - Throws: ``BrokerError``.
    func history(of channel: ChannelName, after offset: Int64?, limit: Int) async throws -> History

    /// Adds a listener to `channel` on this instance; the future completes once messages
    /// published from then on will reach the hub. Balance every call with ``leave(_:)``,
    /// also when the future fails.
    func join(_ channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<Void>

    /// Removes a listener added by ``join(_:on:)``.
    func leave(_ channel: ChannelName)

    /// Tells everyone in `channel`, on every instance, that `member` is typing. Nothing
    /// is stored.
    /// - Throws: ``BrokerError``.
    func typing(_ member: Member, in channel: ChannelName) async throws

    /// Moves how far `member` has read `channel` forward to `offset` (held to the
    /// channel's last offset) and, when it moved, tells the channel's instances
    /// (``ChatEvent/read(channel:member:offset:)``). An offset of 0 only reads it.
    /// - Returns: how far they have read now (0: nothing yet).
    /// - Throws: ``BrokerError``.
    func markRead(_ member: Member, in channel: ChannelName, upTo offset: Int64) async throws -> Int64

    /// How far each of `ids` has read `channel` (absent: nothing yet), in one read.
    /// - Throws: ``BrokerError``.
    func readStates(of ids: [String], in channel: ChannelName) async throws -> [String: Int64]

    /// Keeps this instance's leases on `channel` and reads who is there.
    ///
    /// Each instance holds one lease per person it serves in a room, renewed for
    /// `lifetime` (an instance that crashes stops renewing, and its people leave when
    /// their leases end). `refreshing` are the people with sockets here (their names are
    /// stored too); `leaving` are ids whose last socket here closed: their lease is cut
    /// to `grace`, so a quick reconnect, here or elsewhere, shows no leave.
    /// - Returns: the distinct identities online; the list only when at most `listLimit`.
    ///   A negative `listLimit` only renews (nothing is read; `online` is -1).
    /// - Throws: ``BrokerError``.
    func updatePresence(
        of channel: ChannelName, instance: String, refreshing: [Member], leaving: [String],
        lifetime: Duration, grace: Duration, listLimit: Int
    ) async throws -> RoomSnapshot

    /// Gives `member` a place in `channel` if they have one already (on any instance) or
    /// fewer than `cap` people are there; atomically, so that two instances racing for
    /// the last place cannot both win.
    /// - Returns: whether they are in.
    /// - Throws: ``BrokerError``.
    func admit(_ member: String, to channel: ChannelName, instance: String, cap: Int, lifetime: Duration) async throws -> Bool

    /// A secret every instance on this broker shares: the stored one, or `proposed` if
    /// none is stored yet (the first instance's proposal wins).
    /// - Throws: ``BrokerError``.
    func sharedSecret(named name: String, proposed: String) async throws -> String

    /// Carries out a moderation action in `channel`, atomically, and tells every instance
    /// (``ChatEvent/moderation(channel:change:)``). Mutes, bans and slow mode outlive a
    /// new epoch of the channel's history.
    /// - Throws: ``BrokerError``.
    func moderate(_ action: ModerationAction, in channel: ChannelName) async throws -> ModerationOutcome

    /// The channel's mutes, bans and slow mode now (those that ended left out).
    /// - Throws: ``BrokerError``.
    func moderation(of channel: ChannelName) async throws -> RoomModeration

    /// Checks that the broker can serve, once at start.
    /// - Throws: ``BrokerError`` naming what cannot be reached.
    func start() async throws

    /// Closes the connections ``start()`` opened, when the server does not start after
    /// all; once running, its ``services`` close them as they stop.
    func close()

    /// Long-lived connections to run beside the server, stopped after it.
    var services: [any Service] { get }

    /// Why the broker cannot serve now (for `/readyz`), or `nil` when it can: publishes
    /// would be accepted and every channel's subscription is in place.
    func notReadyReason() async -> String?
}

extension Broker {
    /// Through a task, for a broker with no faster way.
    public func publish(_ batch: [PublishRequest], on eventLoop: any EventLoop) -> EventLoopFuture<[Result<Publication, BrokerError>]> {
        eventLoop.makeFutureWithTask { await publish(batch) }
    }

    /// One message after another.
    public func publish(_ batch: [PublishRequest]) async -> [Result<Publication, BrokerError>] {
        var results: [Result<Publication, BrokerError>] = []
        results.reserveCapacity(batch.count)
        var failed: Set<ChannelName> = []
        for request in batch {
            if failed.contains(request.channel) {
                results.append(.failure(BrokerError.notAttempted))
                continue
            }
            do {
                results.append(.success(try await publish(request)))
            } catch {
                let error = error as? BrokerError ?? BrokerError(.failed, "\(error)")
                if error.stopsTheChannel { failed.insert(request.channel) }
                results.append(.failure(error))
            }
        }
        return results
    }

    /// Publishes `data` as a message.
    public func publish(_ data: ByteBuffer, name: String?, to channel: ChannelName, options: PublishOptions) async throws -> Publication {
        try await publish(PublishRequest(data, name: name, to: channel, options: options))
    }

    /// Publishes `data`, with no idempotency key, creating the channel if need be.
    public func publish(_ data: ByteBuffer, name: String? = nil, to channel: ChannelName) async throws -> Message {
        try await publish(data, name: name, to: channel, options: PublishOptions()).message
    }
}

/// A message, or a change to one, to publish.
public struct PublishRequest: Sendable {
    /// The text; for a reaction, its emoji; for a delete, empty.
    public var data: ByteBuffer
    public var name: String?
    public var channel: ChannelName
    public var options: PublishOptions
    /// The sender's identity, if they proved one: the message's `from`, and who may change it.
    public var from: String?
    /// A message, or a change to one (a reaction is asked for as on: it toggles).
    public var kind: MessageKind
    /// Sent by a moderator or a trusted integration (the publish token): exempt from slow
    /// mode, and a moderator's delete may remove anyone's message.
    public var moderator: Bool

    public init(
        _ data: ByteBuffer, name: String? = nil, to channel: ChannelName, options: PublishOptions = PublishOptions(), from: String? = nil,
        kind: MessageKind = .message, moderator: Bool = false
    ) {
        self.data = data
        self.name = name
        self.channel = channel
        self.options = options
        self.from = from
        self.kind = kind
        self.moderator = moderator
    }
}

/// What a publish asks of the broker beyond the message itself.
public struct PublishOptions: Sendable {
    /// Makes a retry safe: a second publish with the same key to the same channel within
    /// the broker's dedupe window publishes nothing and answers the first one's message.
    /// The caller scopes it to the sender (e.g. `<identity>|<client's id>`).
    public var idempotencyKey: String?
    /// Whether this publish may create the channel; when `false` and the channel does
    /// not exist, the broker throws `.newChannelRefused` and creates nothing.
    public var mayCreateChannel: Bool

    /// Creates options; the defaults: no key, the channel may be created.
    public init(idempotencyKey: String? = nil, mayCreateChannel: Bool = true) {
        self.idempotencyKey = idempotencyKey
        self.mayCreateChannel = mayCreateChannel
    }
}

/// What the broker did with a publish.
public struct Publication: Sendable {
    /// The message as stored. For a repeat: the first publish's offset, epoch and time.
    public var message: Message
    /// An earlier publish had the same idempotency key: nothing new was published.
    public var isRepeat: Bool
    /// This publish created the channel (its first message, or the first since its
    /// history expired).
    public var createdChannel: Bool

    /// Creates a publication.
    public init(message: Message, isRepeat: Bool = false, createdChannel: Bool = false) {
        self.message = message
        self.isRepeat = isRepeat
        self.createdChannel = createdChannel
    }
}

/// Why the broker could not do what was asked.
public struct BrokerError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Kind: Sendable {
        /// The backing store cannot be reached now; try again later.
        case unavailable
        /// The backing store refused the request.
        case failed
        /// The request reached the backing store but no answer came back (a timeout, a
        /// connection lost mid-command): it may have been carried out. Retry a publish
        /// with the same idempotency key.
        case unconfirmed
        /// The publish would have created a channel and was not allowed to.
        case newChannelRefused
        /// A change its message does not allow, or a sender the room's moderation refuses,
        /// with the HTTP status that says why: 403 (not the sender's, past the edit
        /// window, deleted; muted or banned), 404 (no such message in the history), 400
        /// (one reaction too many), 429 (slow mode: ``BrokerError/retryAfter`` says when).
        case refused(status: Int)
    }

    /// The kind of failure.
    public var kind: Kind
    /// A message a person can act on.
    public var message: String
    /// Why, in one word for `chatroom_refusals_total` (`muted`, `banned`, `slow_mode`);
    /// `nil`: the status says it.
    public var reason: String?
    /// Seconds to wait before the same publish can succeed (slow mode), if known.
    public var retryAfter: Int?

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, reason: String? = nil) {
        self.kind = kind
        self.message = message
        self.reason = reason
    }

    public var description: String { message }

    /// Whether the messages of a batch after this failure, to the same channel, are left
    /// unsent (so that a retry cannot put them before it). A change its message refused
    /// is not retried, and stops nothing.
    public var stopsTheChannel: Bool {
        switch kind {
        // A refusal of this message alone; and a sender's allowance of new channels is
        // theirs: another sender's message in the batch may still create the channel.
        case .refused, .newChannelRefused: false
        case .unavailable, .unconfirmed, .failed: true
        }
    }

    /// A message of a batch that followed one of its channel that failed: not sent.
    static let notAttempted = BrokerError(.unavailable, "an earlier message to the channel failed, so this one was not sent")
}
