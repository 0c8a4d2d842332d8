/// The pub/sub bookkeeping of one connection, without the connection: reference counts
/// per channel, the replies still due for each, the channels Redis confirmed, the joins
/// waiting for a confirmation, and what to subscribe again after a reconnect.
///
/// Each event is a `mutating func` that returns what to do: which commands to send,
/// which waiters to complete, what to tell the owner. The owner does the I/O. A reply
/// confirms a channel only once every SUBSCRIBE and UNSUBSCRIBE sent for it has been
/// answered, so a quick unsubscribe and subscribe again is not confirmed by the first
/// reply.
///
/// `Waiter` is what a join waits on (a promise in ``RedisSubscriber``).
struct SubscriptionStateMachine<Waiter> {
    private var references: [String: Int] = [:]
    private var repliesPending: [String: Int] = [:]
    private var confirmed: Set<String> = []
    private var waiters: [String: [Waiter]] = [:]
    /// Channels subscribed again on the current connection and not yet confirmed.
    private var resubscribing: Set<String> = []
    private var connection: ConnectionState = .neverConnected

    private enum ConnectionState {
        case neverConnected
        case connected
        case disconnected
        /// Shut down while connected: the connection is closing.
        case closing
        case shutdown
    }

    init() {}

    // MARK: - Actions

    /// What to do after a join (``subscribe(_:waiter:)``, ``resubscribe(_:waiter:)``).
    enum SubscribeAction {
        /// Fail the waiter: no connection (the reference is kept).
        case failUnavailable(Waiter)
        /// Succeed the waiter now: Redis confirmed the channel already.
        case succeed(Waiter)
        /// Send SUBSCRIBE for these channels; the waiter waits for the reply.
        case sendSubscribe([String])
        /// The waiter waits for a reply already due.
        case wait
    }

    /// What to do after ``unsubscribe(_:)``.
    enum UnsubscribeAction {
        /// Other references remain, or there were none.
        case none
        /// The last reference went: fail the joins still waiting, and send UNSUBSCRIBE
        /// if `send` (there is a connection).
        case unsubscribe(String, failing: [Waiter], send: Bool)
    }

    /// What to do after a reply or a message from Redis.
    enum ReplyAction {
        case none
        /// Succeed these waiters; when `resubscribed` is set, every channel subscribed
        /// again on this connection is confirmed: tell the owner these (all referenced).
        case confirmed(succeed: [Waiter], resubscribed: [String]?)
        /// The node unsubscribed the channel by itself (sharded pub/sub: its slot moved).
        case lost(String)
    }

    /// What to do with a message received on a channel.
    enum MessageAction {
        case deliver
        /// Not confirmed (or no longer referenced): drop it.
        case ignore
    }

    /// What to do once a connection is up.
    enum ConnectedAction {
        /// Send SUBSCRIBE for these channels (maybe none); `isReconnect` when not the first.
        case resubscribe([String], isReconnect: Bool)
        /// Shut down meanwhile: close the new connection.
        case close
    }

    /// What to do once the connection closed.
    enum ConnectionLostAction {
        /// Fail these waiters; the references stay, to subscribe again on the next connection.
        case fail([Waiter])
    }

    /// What to do when shut down.
    enum ShutdownAction {
        case closeConnection
        case none
    }

    /// What to do after ``adopt(_:references:waiters:waiter:)``.
    enum AdoptAction {
        case sendSubscribe([String])
        case succeed([Waiter])
        case wait
    }

    // MARK: - Requests

    /// A join of `name`: one more reference.
    mutating func subscribe(_ name: String, waiter: Waiter) -> SubscribeAction {
        let count = references[name, default: 0] + 1
        references[name] = count
        guard isConnected else { return .failUnavailable(waiter) }
        if confirmed.contains(name) && repliesPending[name, default: 0] == 0 {
            return .succeed(waiter)
        }
        waiters[name, default: []].append(waiter)
        if count == 1 {
            countReply(for: name)
            return .sendSubscribe([name])
        }
        return .wait
    }

    /// A leave of `name`: one reference less; the last one unsubscribes.
    mutating func unsubscribe(_ name: String) -> UnsubscribeAction {
        guard let count = references[name] else { return .none }
        if count > 1 {
            references[name] = count - 1
            return .none
        }
        references[name] = nil
        confirmed.remove(name)
        let failing = waiters.removeValue(forKey: name) ?? []
        guard isConnected else { return .unsubscribe(name, failing: failing, send: false) }
        countReply(for: name)
        return .unsubscribe(name, failing: failing, send: true)
    }

    /// Subscribes again a channel the node gave up; the waiter waits for the confirmation.
    mutating func resubscribe(_ name: String, waiter: Waiter) -> SubscribeAction {
        guard references[name] != nil, isConnected else { return .failUnavailable(waiter) }
        waiters[name, default: []].append(waiter)
        guard repliesPending[name] == nil else { return .wait }
        countReply(for: name)
        return .sendSubscribe([name])
    }

    /// Forgets `name` without a word to Redis (the node gave it up or is gone), and
    /// returns its references and the joins still waiting for a confirmation.
    mutating func drop(_ name: String) -> (references: Int, waiters: [Waiter]) {
        let count = references.removeValue(forKey: name) ?? 0
        repliesPending[name] = nil
        confirmed.remove(name)
        resubscribing.remove(name)
        return (count, waiters.removeValue(forKey: name) ?? [])
    }

    /// Takes over `name` from another connection: its references (at least one) and its
    /// waiting joins, plus `waiter`.
    mutating func adopt(_ name: String, references count: Int, waiters moved: [Waiter], waiter: Waiter) -> AdoptAction {
        let first = references[name] == nil
        references[name, default: 0] += max(count, 1)
        waiters[name, default: []].append(contentsOf: moved + [waiter])
        if first, isConnected {
            countReply(for: name)
            return .sendSubscribe([name])
        }
        if confirmed.contains(name) && repliesPending[name, default: 0] == 0 {
            return .succeed(waiters.removeValue(forKey: name) ?? [])
        }
        return .wait
    }

    // MARK: - From Redis

    /// A `subscribe` or `ssubscribe` reply.
    mutating func subscribeReplyReceived(_ name: String) -> ReplyAction {
        let succeed = replyReceived(name)
        guard resubscribing.remove(name) != nil, resubscribing.isEmpty else {
            return succeed.isEmpty ? .none : .confirmed(succeed: succeed, resubscribed: nil)
        }
        return .confirmed(succeed: succeed, resubscribed: Array(references.keys))
    }

    /// An `unsubscribe` reply (classic pub/sub).
    mutating func unsubscribeReplyReceived(_ name: String) -> ReplyAction {
        let succeed = replyReceived(name)
        return succeed.isEmpty ? .none : .confirmed(succeed: succeed, resubscribed: nil)
    }

    /// A `sunsubscribe`: a reply, or, when none was due, the node giving the channel up.
    mutating func shardUnsubscribeReceived(_ name: String) -> ReplyAction {
        guard repliesPending[name] == nil else { return unsubscribeReplyReceived(name) }
        guard references[name] != nil else { return .none }
        confirmed.remove(name)
        resubscribing.remove(name)
        return .lost(name)
    }

    /// A message published to `name`.
    mutating func messageReceived(_ name: String) -> MessageAction {
        confirmed.contains(name) ? .deliver : .ignore
    }

    // MARK: - Connection

    /// A connection is up: subscribe every referenced channel on it.
    mutating func connectionEstablished() -> ConnectedAction {
        let isReconnect: Bool
        switch connection {
        case .closing, .shutdown: return .close
        case .neverConnected: isReconnect = false
        case .connected, .disconnected: isReconnect = true
        }
        connection = .connected
        let names = Array(references.keys)
        resubscribing = Set(names)
        for name in names { countReply(for: name) }
        return .resubscribe(names, isReconnect: isReconnect)
    }

    /// The connection closed: nothing is confirmed any more, and every waiting join fails.
    mutating func connectionLost() -> ConnectionLostAction {
        switch connection {
        case .connected: connection = .disconnected
        case .closing: connection = .shutdown
        case .neverConnected, .disconnected, .shutdown: break
        }
        confirmed.removeAll()
        repliesPending.removeAll()
        resubscribing.removeAll()
        var failing: [Waiter] = []
        for name in Array(waiters.keys) { failing += waiters.removeValue(forKey: name) ?? [] }
        return .fail(failing)
    }

    /// Shut down: no connection is taken any more.
    mutating func shutdown() -> ShutdownAction {
        switch connection {
        case .connected:
            connection = .closing
            return .closeConnection
        case .neverConnected, .disconnected:
            connection = .shutdown
            return .none
        case .closing, .shutdown:
            return .none
        }
    }

    // MARK: - State

    /// Whether a connection is up (it may be closing after a shutdown).
    var isConnected: Bool {
        switch connection {
        case .connected, .closing: true
        case .neverConnected, .disconnected, .shutdown: false
        }
    }

    /// Whether ``shutdown()`` happened.
    var isShutdown: Bool {
        switch connection {
        case .closing, .shutdown: true
        case .neverConnected, .connected, .disconnected: false
        }
    }

    /// The channels with at least one reference.
    var subscribedChannels: Set<String> { Set(references.keys) }

    /// Whether `name` has references.
    func serves(_ name: String) -> Bool { references[name] != nil }

    /// Channels referenced that Redis has not confirmed.
    var unconfirmedCount: Int { references.keys.filter { !confirmed.contains($0) }.count }

    // MARK: - Private

    private mutating func countReply(for name: String) {
        repliesPending[name, default: 0] += 1
    }

    /// Counts one reply for `name`; once none is due and `name` is referenced, it is
    /// confirmed and its waiters are returned.
    private mutating func replyReceived(_ name: String) -> [Waiter] {
        let pending = max(0, repliesPending[name, default: 0] - 1)
        repliesPending[name] = pending == 0 ? nil : pending
        guard pending == 0 && references[name] != nil else { return [] }
        confirmed.insert(name)
        return waiters.removeValue(forKey: name) ?? []
    }
}
