import NIOCore
import NIOPosix

/// Where and how the chat.v2 subscribers of a run connect.
struct V2SubscriberSettings: Sendable {
    var host: String
    var port: Int
    /// The run's channel names; a subscriber holds a few of them, by index.
    var channels: [String]
    /// Keep the `uid` cookie the server sets on the first upgrade and send it on every
    /// reconnect, as a browser does (false: a new person on every connection).
    var keepsCookie = true
    /// Loopback source addresses to spread sockets over (each has its own ports).
    var sources: [String] = []
    /// Resubscribe after a `refused` 4503 or 4429 (retry later), at most this often.
    var subscribeRetries = 50
}

/// One chat.v2 subscriber that outlives its connections: it holds a few channels, and
/// for each the epoch and the last offset it has, so that after a reconnect it resumes
/// with since/epoch. It checks every message against what it holds: a duplicate, a
/// hole (lost), a `gap` or `reset` are counted.
///
/// Lives on one event loop; every connection it makes is on that loop.
final class V2Subscriber: V2Role {
    struct Subscription {
        let channel: Int
        var epoch: [UInt8]?
        /// The highest offset held: every offset up to it arrived, or was counted lost.
        var held: UInt64 = 0
        /// `subscribed` arrived on the current connection.
        var confirmed = false
        /// The first `subscribed` set `held`; later ones resume from it.
        var started = false
        /// After a `reset`, the next message starts the count again.
        var afterReset = false
        var retries = 0
    }

    /// What a subscriber counted; added up over a run by ``V2SubscriberCounts/add(_:)``.
    struct Counts: Sendable {
        var messages: UInt64 = 0
        var duplicates: UInt64 = 0
        var lost: UInt64 = 0
        var gaps: UInt64 = 0
        var gapMessages: UInt64 = 0
        var resets: UInt64 = 0
        var epochChanges: UInt64 = 0
        var refused: [Int: UInt64] = [:]
        var errors: UInt64 = 0
        var presenceFrames: UInt64 = 0
        var presenceBytes: UInt64 = 0
        var otherFrames: UInt64 = 0
        var connects: UInt64 = 0
        var connectFailures: UInt64 = 0
        var upgradeRefusals: UInt64 = 0
        /// Connections with no answer to the upgrade within 10 s (dropped and tried again).
        var upgradeTimeouts: UInt64 = 0
        var closeCodes: [UInt16: UInt64] = [:]
        var firstProblem: String?

        mutating func add(_ other: Counts) {
            messages += other.messages
            duplicates += other.duplicates
            lost += other.lost
            gaps += other.gaps
            gapMessages += other.gapMessages
            resets += other.resets
            epochChanges += other.epochChanges
            for (code, count) in other.refused { refused[code, default: 0] += count }
            errors += other.errors
            presenceFrames += other.presenceFrames
            presenceBytes += other.presenceBytes
            otherFrames += other.otherFrames
            connects += other.connects
            connectFailures += other.connectFailures
            upgradeRefusals += other.upgradeRefusals
            upgradeTimeouts += other.upgradeTimeouts
            for (code, count) in other.closeCodes { closeCodes[code, default: 0] += count }
            if firstProblem == nil { firstProblem = other.firstProblem }
        }
    }

    let index: Int
    let loop: any EventLoop
    private let settings: V2SubscriberSettings
    private(set) var subscriptions: [Subscription]
    private(set) var counts = Counts()
    /// The `uid` cookie sent on every connection once known.
    var cookie: String?
    private var generation = 0
    /// The current connection is upgraded.
    private(set) var isOpen = false
    /// Connecting or connected; false once a connection ended until told to connect.
    private var isConnecting = false
    /// Reconnect by itself when a connection ends or fails (after a short pause).
    var reconnects = false
    private var channel: (any Channel)?
    private var context: ChannelHandlerContext?
    private var socket: V2Socket<V2Subscriber>?
    /// When the current connection was upgraded, and when all its subscriptions were
    /// confirmed (monotonic ns; 0: not yet).
    private(set) var openedAt: UInt64 = 0
    private(set) var confirmedAt: UInt64 = 0

    init(index: Int, channels: [Int], settings: V2SubscriberSettings, loop: any EventLoop) {
        self.index = index
        self.loop = loop
        self.settings = settings
        subscriptions = channels.map { Subscription(channel: $0) }
    }

    // MARK: - Connections

    /// Opens a connection (on `loop`) and subscribes on it.
    func connect() {
        loop.preconditionInEventLoop()
        guard !isConnecting else { return }
        isConnecting = true
        generation += 1
        let attempt = generation
        let source = settings.sources.isEmpty ? nil : settings.sources[index % settings.sources.count]
        connectV2(
            NIOLoopBound(self, eventLoop: loop), loop: loop, host: settings.host, port: settings.port, cookie: settings.keepsCookie ? cookie : nil,
            source: source, generation: attempt
        ).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                guard attempt == self.generation else { return }
                self.channel = channel
                // Like a browser's timeout: no answer to the upgrade in 10 s, drop it and retry.
                self.loop.assumeIsolated().scheduleTask(in: .seconds(10)) {
                    guard attempt == self.generation, self.isConnecting, !self.isOpen else { return }
                    self.counts.upgradeTimeouts += 1
                    channel.close(promise: nil)
                }
            case .failure(let error):
                self.connectionEnded(attempt, failure: "connect: \(error)", refused: false, closeCode: nil)
            }
        }
    }

    /// Drops the connection without a close handshake (end of a run).
    func disconnect() {
        reconnects = false
        channel?.close(promise: nil)
    }

    func opened(_ socket: V2Socket<V2Subscriber>, context: ChannelHandlerContext, cookie: String?) {
        guard socket.generation == generation else { return }
        if self.cookie == nil, let cookie { self.cookie = cookie }
        self.socket = socket
        self.context = context
        isOpen = true
        openedAt = monotonicNanoseconds()
        confirmedAt = 0
        counts.connects += 1
        for slot in subscriptions.indices {
            subscriptions[slot].confirmed = false
            subscriptions[slot].retries = 0
            subscribe(slot)
        }
    }

    /// Sends a subscribe for subscription `slot`: with since/epoch once it holds a position.
    private func subscribe(_ slot: Int) {
        guard let socket else { return }
        let subscription = subscriptions[slot]
        let name = settings.channels[subscription.channel]
        socket.queueText { out in
            out.writeStaticString("{\"type\":\"subscribe\",\"channel\":\"")
            out.writeString(name)
            if subscription.started, let epoch = subscription.epoch {
                out.writeStaticString("\",\"since\":")
                out.writeDecimal(subscription.held)
                out.writeStaticString(",\"epoch\":\"")
                out.writeBytes(epoch)
            }
            out.writeStaticString("\"}")
        }
    }

    func ended(_ socket: V2Socket<V2Subscriber>, refusal: String?, closeCode: UInt16?) {
        connectionEnded(socket.generation, failure: refusal, refused: refusal != nil, closeCode: closeCode)
    }

    private func connectionEnded(_ attempt: Int, failure: String?, refused: Bool, closeCode: UInt16?) {
        guard attempt == generation, isConnecting else { return }
        isConnecting = false
        isOpen = false
        openedAt = 0
        confirmedAt = 0
        channel = nil
        context = nil
        socket = nil
        for slot in subscriptions.indices { subscriptions[slot].confirmed = false }
        if let closeCode { counts.closeCodes[closeCode, default: 0] += 1 }
        if let failure {
            if refused { counts.upgradeRefusals += 1 } else { counts.connectFailures += 1 }
            if counts.firstProblem == nil { counts.firstProblem = failure }
        }
        if reconnects {
            // Like a page: try again shortly, with jitter.
            loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64.random(in: 50...250))) {
                if self.reconnects { self.connect() }
            }
        }
    }

    // MARK: - Frames

    func received(_ frame: V2Frame, payload: UnsafeRawBufferPointer, socket: V2Socket<V2Subscriber>, context: ChannelHandlerContext) {
        switch frame.kind {
        case .message:
            guard let slot = slot(of: frame, in: payload), let offset = frame.offset else { return problem("message without a known channel or offset", payload) }
            counts.messages += 1
            var subscription = subscriptions[slot]
            if let range = frame.epoch {
                let epoch = UnsafeRawBufferPointer(rebasing: payload[range])
                if subscription.epoch == nil {
                    // The channel had no history when subscribed: its first message names the epoch.
                    subscription.epoch = Array(epoch)
                } else if !subscription.epoch!.elementsEqual(epoch) {
                    if !subscription.afterReset {
                        // Another epoch without a `reset`: counted, and counted from again.
                        counts.epochChanges += 1
                        problem("message of another epoch, no reset", payload)
                        subscription.afterReset = true
                    }
                    subscription.epoch = Array(epoch)
                }
            }
            if subscription.afterReset {
                subscription.afterReset = false
                subscription.held = offset
            } else if offset == subscription.held + 1 {
                subscription.held = offset
            } else if offset <= subscription.held {
                counts.duplicates += 1
            } else {
                counts.lost += offset - subscription.held - 1
                subscription.held = offset
            }
            subscriptions[slot] = subscription
        case .subscribed:
            guard let slot = slot(of: frame, in: payload) else { return problem("subscribed to a channel not asked for", payload) }
            subscriptions[slot].confirmed = true
            if !subscriptions[slot].started {
                // A first subscription: live messages after the channel's last offset follow.
                subscriptions[slot].started = true
                subscriptions[slot].held = frame.offset ?? 0
                subscriptions[slot].epoch = frame.epoch.map { Array(UnsafeRawBufferPointer(rebasing: payload[$0])) }
            }
            if confirmedAt == 0, subscriptions.allSatisfy(\.confirmed) { confirmedAt = monotonicNanoseconds() }
        case .reset:
            guard let slot = slot(of: frame, in: payload) else { return problem("reset of a channel not asked for", payload) }
            counts.resets += 1
            subscriptions[slot].epoch = frame.epoch.map { Array(UnsafeRawBufferPointer(rebasing: payload[$0])) }
            subscriptions[slot].afterReset = true
            problem("reset", payload)
        case .gap:
            guard let slot = slot(of: frame, in: payload), let from = frame.from, let to = frame.to, to >= from else { return problem("gap without a known channel", payload) }
            counts.gaps += 1
            counts.gapMessages += to - from + 1
            subscriptions[slot].held = max(subscriptions[slot].held, to)
            problem("gap", payload)
        case .refused:
            counts.refused[frame.code ?? 0, default: 0] += 1
            problem("refused", payload)
            guard let slot = slot(of: frame, in: payload) else { return }
            subscriptions[slot].confirmed = false
            // 4503 (broker unavailable, also a failed resume) and 4429 (too many history
            // reads): subscribe again after a pause, with since/epoch.
            if frame.code == 4503 || frame.code == 4429, subscriptions[slot].retries < settings.subscribeRetries {
                subscriptions[slot].retries += 1
                let attempt = generation
                loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64.random(in: 100...300))) {
                    guard attempt == self.generation, self.isOpen, let context = self.context else { return }
                    self.subscribe(slot)
                    self.socket?.flush(context: context)
                }
            }
        case .error:
            counts.errors += 1
            problem("error", payload)
        case .members, .presence, .join, .leave:
            counts.presenceFrames += 1
            counts.presenceBytes += UInt64(payload.count)
        case .unsubscribed, .pong:
            break
        case .ack, .nack, .other:
            counts.otherFrames += 1
        }
    }

    func readComplete(_ socket: V2Socket<V2Subscriber>, context: ChannelHandlerContext) {}

    private func problem(_ what: String, _ payload: UnsafeRawBufferPointer) {
        if counts.firstProblem == nil { counts.firstProblem = "\(what): \(String(decoding: payload.prefix(300), as: UTF8.self))" }
    }

    /// The subscription a frame's `channel` names (names end in `_<index>`).
    private func slot(of frame: V2Frame, in payload: UnsafeRawBufferPointer) -> Int? {
        guard let range = frame.channel else { return nil }
        var value = 0
        var scale = 1
        for byte in UnsafeRawBufferPointer(rebasing: payload[range]).reversed() {
            guard byte >= 48, byte <= 57 else { break }
            value += Int(byte - 48) * scale
            scale *= 10
        }
        return subscriptions.firstIndex { $0.channel == value }
    }

    // MARK: - Progress

    /// Subscriptions that hold at least `targets[channel]` on a confirmed subscription.
    func caughtUp(_ targets: [UInt64]) -> Int {
        guard isOpen else { return 0 }
        var count = 0
        for subscription in subscriptions where subscription.confirmed && subscription.held >= targets[subscription.channel] { count += 1 }
        return count
    }

    /// Subscriptions short of `targets` (confirmed or not), and by how many offsets.
    func shortfall(_ targets: [UInt64]) -> (subscriptions: Int, offsets: UInt64) {
        var result = (0, UInt64(0))
        for subscription in subscriptions where subscription.held < targets[subscription.channel] {
            result.0 += 1
            result.1 += targets[subscription.channel] - subscription.held
        }
        return result
    }

    /// Offsets held past `targets` (more than the publisher got acked: a bug somewhere).
    func excess(_ targets: [UInt64]) -> UInt64 {
        subscriptions.reduce(0) { $0 + ($1.held > targets[$1.channel] ? $1.held - targets[$1.channel] : 0) }
    }
}

/// Every subscriber of a run, grouped by the event loop each lives on.
struct V2SubscriberGroup: Sendable {
    /// Per loop: that loop's subscribers.
    let loops: [(any EventLoop, NIOLoopBound<[V2Subscriber]>)]
    let count: Int

    /// Makes `count` subscribers spread round-robin over `group`'s loops; subscriber i
    /// holds the channels `channelsOf(i)`.
    static func make(
        count: Int, group: any EventLoopGroup, settings: V2SubscriberSettings, channelsOf: @escaping @Sendable (Int) -> [Int]
    ) async throws -> V2SubscriberGroup {
        let loops = Array(group.makeIterator())
        var made: [(any EventLoop, NIOLoopBound<[V2Subscriber]>)] = []
        for (number, loop) in loops.enumerated() {
            let bound = try await loop.submit {
                let subscribers = stride(from: number, to: count, by: loops.count).map { index in
                    V2Subscriber(index: index, channels: channelsOf(index), settings: settings, loop: loop)
                }
                return NIOLoopBound(subscribers, eventLoop: loop)
            }.get()
            made.append((loop, bound))
        }
        return V2SubscriberGroup(loops: made, count: count)
    }

    /// Runs `body` on each loop over that loop's subscribers and collects the answers.
    func each<Answer: Sendable>(_ body: @escaping @Sendable ([V2Subscriber]) -> Answer) async throws -> [Answer] {
        var answers: [Answer] = []
        for (loop, bound) in loops {
            answers.append(try await loop.submit { body(bound.value) }.get())
        }
        return answers
    }

    /// Connects subscribers `range` (by index), and waits until all of them are open
    /// with every subscription confirmed, or `seconds` pass. Returns how many are.
    func connect(_ range: Range<Int>, within seconds: Double) async throws -> Int {
        _ = try await each { subscribers in
            for subscriber in subscribers where range.contains(subscriber.index) { subscriber.connect() }
        }
        let until = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while true {
            let ready = try await each { subscribers in
                subscribers.reduce(0) { $0 + (range.contains($1.index) && $1.confirmedAt > 0 ? 1 : 0) }
            }.reduce(0, +)
            let failed = try await each { subscribers in
                subscribers.reduce(0) { $0 + (range.contains($1.index) && $1.counts.upgradeRefusals + $1.counts.connectFailures > 0 ? 1 : 0) }
            }.reduce(0, +)
            if ready + failed >= range.count || monotonicNanoseconds() > until { return ready }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Connects every subscriber, 500 at a time, waiting up to `seconds` for each batch
    /// to be open and subscribed. With `people` N, subscribers 0..<N connect first and
    /// get their cookies from the server; subscriber i then uses subscriber (i mod N)'s.
    /// Returns how many are open and subscribed.
    func connectAll(people: Int?, within seconds: Double) async throws -> Int {
        let first = min(people ?? count, count)
        var ready = 0
        for start in stride(from: 0, to: first, by: 500) {
            ready += try await connect(start..<min(start + 500, first), within: seconds)
        }
        guard first < count else { return ready }
        let cookies = try await each { subscribers in
            subscribers.filter { $0.index < first }.map { ($0.index, $0.cookie) }
        }.flatMap { $0 }
        let byPerson = Dictionary(uniqueKeysWithValues: cookies)
        _ = try await each { subscribers in
            for subscriber in subscribers where subscriber.index >= first { subscriber.cookie = byPerson[subscriber.index % first] ?? nil }
        }
        for start in stride(from: first, to: count, by: 500) {
            ready += try await connect(start..<min(start + 500, count), within: seconds)
        }
        return ready
    }

    /// Everything the subscribers counted, added up.
    func counts() async throws -> V2Subscriber.Counts {
        var total = V2Subscriber.Counts()
        for part in try await each({ subscribers in
            var counts = V2Subscriber.Counts()
            for subscriber in subscribers { counts.add(subscriber.counts) }
            return counts
        }) {
            total.add(part)
        }
        return total
    }
}
