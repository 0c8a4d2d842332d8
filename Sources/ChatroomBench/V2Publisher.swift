import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One chat.v2 socket sending `send` frames: keeps `window` unacknowledged (as fast as
/// acks come back), or sends each message when it is due at the plan's rate.
final class V2Publisher: V2Role {
    let index: Int
    private let plan: V2PublishPlan
    private let tally: V2PublishTally
    let ready: EventLoopPromise<Void>
    let done: EventLoopPromise<Void>
    private var socket: V2Socket<V2Publisher>?
    private var context: ChannelHandlerContext?
    private var sent: UInt64 = 0
    private var outstanding = 0
    private var begun = false
    /// The plan's start, deadline and this socket's quota, read once at ``begin()``.
    private var start: UInt64 = 0
    private var deadline: UInt64 = 0
    private var quota: UInt64 = 0
    private var timerPending = false
    private var finished = false
    private var isReady = false
    private var isDone = false
    private var local = V2PublishTally.Counts()
    private var offsets: [(Int, UInt64)] = []
    private var epochs: [Int: String] = [:]
    private var acked: [UInt64] = []  // bitmap of this socket's message numbers

    init(index: Int, plan: V2PublishPlan, tally: V2PublishTally, loop: any EventLoop) {
        self.index = index
        self.plan = plan
        self.tally = tally
        ready = loop.makePromise()
        done = loop.makePromise()
    }

    func opened(_ socket: V2Socket<V2Publisher>, context: ChannelHandlerContext, cookie: String?) {
        self.socket = socket
        self.context = context
        isReady = true
        ready.succeed()
    }

    /// Starts sending (on the socket's loop), once every publisher is open.
    func begin() {
        begun = true
        start = plan.start
        deadline = start + plan.duration
        quota = plan.quota(of: index)
        fill()
        if let context { socket?.flush(context: context) }
    }

    /// Sends what the window and the schedule allow.
    private func fill() {
        guard let socket, !finished else { return }
        let now = monotonicNanoseconds()
        while outstanding < plan.window {
            guard sent < quota, now < deadline, !plan.isStopped else {
                if outstanding == 0 { finish() }
                return
            }
            // Message `sent` of this socket is number `sent × P + index` of the run.
            let number = sent * UInt64(plan.publishers) + UInt64(index)
            var due = now
            if let rate = plan.rate {
                due = start + UInt64(Double(number) / rate * 1e9)
                if due > now {
                    schedule(at: min(due, deadline))
                    return
                }
            }
            let channel = plan.channels[Int(number % UInt64(plan.channels.count))]
            let (nonce, padding, sequence, publisher) = (plan.nonce, plan.padding, sent, index)
            // {"type":"send","id":"<nonce>-<socket>-<sequence>-<due ns>","channel":C,"data":"n=<number+1> t=<due ns> p=<socket> <padding>"}
            socket.queueText { out in
                out.writeStaticString("{\"type\":\"send\",\"id\":\"")
                out.writeString(nonce)
                out.writeInteger(UInt8(ascii: "-"))
                out.writeDecimal(UInt64(publisher))
                out.writeInteger(UInt8(ascii: "-"))
                out.writeDecimal(sequence)
                out.writeInteger(UInt8(ascii: "-"))
                out.writeDecimal(due)
                out.writeStaticString("\",\"channel\":\"")
                out.writeString(channel)
                out.writeStaticString("\",\"data\":\"n=")
                out.writeDecimal(number + 1)
                out.writeStaticString(" t=")
                out.writeDecimal(due)
                out.writeStaticString(" p=")
                out.writeDecimal(UInt64(publisher))
                out.writeInteger(UInt8(ascii: " "))
                out.writeString(padding)
                out.writeStaticString("\"}")
            }
            sent += 1
            outstanding += 1
            local.sent += 1
        }
    }

    private func schedule(at due: UInt64) {
        guard !timerPending, let context else { return }
        timerPending = true
        let now = monotonicNanoseconds()
        context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(due > now ? due - now : 0))) {
            self.timerPending = false
            self.fill()
            if let context = self.context { self.socket?.flush(context: context) }
        }
    }

    func received(_ frame: V2Frame, payload: UnsafeRawBufferPointer, socket: V2Socket<V2Publisher>, context: ChannelHandlerContext) {
        switch frame.kind {
        case .ack:
            let now = monotonicNanoseconds()
            outstanding -= 1
            local.acknowledged += 1
            local.lastAck = now
            if let id = frame.id {
                // "<nonce>-<socket>-<sequence>-<due ns>": the last two numbers.
                let fields = Self.trailingNumbers(UnsafeRawBufferPointer(rebasing: payload[id]))
                let (sequence, due) = (fields.0, fields.1)
                let word = Int(sequence / 64)
                if word >= acked.count { acked.append(contentsOf: repeatElement(0, count: word - acked.count + 1)) }
                let bit = UInt64(1) << (sequence % 64)
                if acked[word] & bit != 0 { local.repeatedAcks += 1 } else { acked[word] |= bit }
                if due > 0, now >= due { local.latency.record(now - due) }
            }
            if let channel = frame.channel, let offset = frame.offset, let number = channelIndex(UnsafeRawBufferPointer(rebasing: payload[channel])) {
                offsets.append((number, offset))
                if epochs[number] == nil, let epoch = frame.epoch { epochs[number] = String(decoding: UnsafeRawBufferPointer(rebasing: payload[epoch]), as: UTF8.self) }
            }
            if begun { fill() }
        case .nack:
            outstanding -= 1
            local.nacks[frame.status ?? 0, default: 0] += 1
            if local.firstProblem == nil { local.firstProblem = "nack: " + String(decoding: payload, as: UTF8.self) }
            if begun { fill() }
        case .error:
            local.errors += 1
            if local.firstProblem == nil { local.firstProblem = "error: " + String(decoding: payload, as: UTF8.self) }
        default:
            break
        }
    }

    /// The channel's place in the plan's list (names end in `_<index>`).
    private func channelIndex(_ name: UnsafeRawBufferPointer) -> Int? {
        if plan.channels.count == 1 { return 0 }
        var value = 0
        var scale = 1
        for byte in name.reversed() {
            guard byte >= 48, byte <= 57 else { break }
            value += Int(byte - 48) * scale
            scale *= 10
        }
        return value < plan.channels.count ? value : nil
    }

    /// The last two `-`-separated decimal numbers of an id.
    private static func trailingNumbers(_ id: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        var numbers: (UInt64, UInt64) = (0, 0)
        var current: UInt64 = 0
        for byte in id {
            if byte == UInt8(ascii: "-") {
                numbers = (numbers.1, current)
                current = 0
            } else if byte >= 48, byte <= 57 {
                current = current &* 10 &+ UInt64(byte - 48)
            }
        }
        return (numbers.1, current)
    }

    func readComplete(_ socket: V2Socket<V2Publisher>, context: ChannelHandlerContext) {
        mergeCounts()
    }

    private func mergeCounts() {
        tally.merge(local, offsets: offsets, epochs: epochs, at: monotonicNanoseconds())
        local = V2PublishTally.Counts()
        offsets.removeAll(keepingCapacity: true)
        epochs.removeAll(keepingCapacity: true)
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        mergeCounts()
        context?.close(promise: nil)
        succeedDone()
    }

    func ended(_ socket: V2Socket<V2Publisher>, refusal: String?, closeCode: UInt16?) {
        let wasFinished = finished
        finished = true
        if !wasFinished {
            local.endedEarly += 1
            if local.firstProblem == nil { local.firstProblem = refusal ?? "closed by the server\(closeCode.map { " with \($0)" } ?? "")" }
        }
        mergeCounts()
        self.context = nil
        self.socket = nil
        if !isReady {
            isReady = true
            ready.fail(BenchError(refusal ?? "connection closed before the upgrade"))
        }
        succeedDone()
    }

    private func succeedDone() {
        guard !isDone else { return }
        isDone = true
        done.succeed()
    }
}

/// Runs `publishers` chat.v2 publishers until the plan is exhausted, time is up or it
/// is stopped; returns once every one has all its acks (or `drain` seconds after the
/// deadline). `started` is called when they begin, after all of them are open.
func runV2Publishers(
    group: any EventLoopGroup, host: String, port: Int, plan: V2PublishPlan, tally: V2PublishTally, source: String? = nil, drain: Double = 10,
    started: @Sendable () -> Void = {}
) async throws {
    var publishers: [(any EventLoop, NIOLoopBound<V2Publisher>, EventLoopFuture<Void>, EventLoopFuture<Void>)] = []
    for index in 0..<plan.publishers {
        let loop = group.next()
        let (bound, ready, done) = try await loop.submit {
            let publisher = V2Publisher(index: index, plan: plan, tally: tally, loop: loop)
            return (NIOLoopBound(publisher, eventLoop: loop), publisher.ready.futureResult, publisher.done.futureResult)
        }.get()
        _ = try await connectV2(bound, loop: loop, host: host, port: port, source: source).get()
        publishers.append((loop, bound, ready, done))
    }
    for (_, _, ready, _) in publishers {
        guard try await value(of: ready, within: 10) != nil else { throw BenchError("a chat.v2 publisher's upgrade was not answered within 10 s") }
    }
    plan.begin(at: monotonicNanoseconds())
    started()
    for (loop, bound, _, _) in publishers { loop.execute { bound.value.begin() } }
    let limit = plan.start + plan.duration + UInt64(drain * 1e9)
    for (_, _, _, done) in publishers {
        while monotonicNanoseconds() < limit {
            // A cancelled run (its caller threw) stops sending and waits for its acks only.
            if Task.isCancelled { plan.stop() }
            if try await value(of: done, within: 0.5) != nil { break }
        }
    }
}

/// Waits up to `seconds` for `future`: its value, or nil when time ran out first.
func value<Value: Sendable>(of future: EventLoopFuture<Value>, within seconds: Double) async throws -> Value? {
    let loop = future.eventLoop
    let answer = loop.makePromise(of: Value?.self)
    // Both callbacks run on `loop`, so one flag there decides which came first.
    let settled = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: loop)
    let timer = loop.scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) {
        guard !settled.value else { return }
        settled.value = true
        answer.succeed(nil)
    }
    future.whenComplete { result in
        timer.cancel()
        guard !settled.value else { return }
        settled.value = true
        switch result {
        case .success(let value): answer.succeed(value)
        case .failure(let error): answer.fail(error)
        }
    }
    return try await answer.futureResult.get()
}
