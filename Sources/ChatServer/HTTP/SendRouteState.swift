import NIOCore
import NIOHTTPTypes

/// The order of one HTTP/1.1 connection's answers, when ``SendRoute`` serves `POST
/// /send/` in the pipeline and the router everything else: answers leave in the order
/// their requests came, whichever of the two serves them.
///
/// Several `/send/` requests sent back to back (pipelined) are served side by side,
/// their messages published together, their answers written in order. A request for
/// the router waits (held, with everything after it) until the route's answers are
/// out; a `/send/` request waits while the router has requests unanswered.
///
/// Pure: the route feeds it what it reads and what is answered, and carries out what
/// it returns.
struct SendRouteState {
    /// One part of a request, as the route reads it.
    enum Part {
        case head(HTTPRequestPart, ours: Bool)
        case body(ByteBuffer)
        case end(HTTPRequestPart)
    }

    /// What to do with a part just read.
    enum ReadAction: Equatable {
        /// Pass it on to the router.
        case forward
        /// Keep it until ``takeHeld()``: the other side has answers to give first.
        case hold
        /// The head of a request of the route's own: start reading it as `request`.
        case start(request: Int)
        /// A part of the route's request's body.
        case collect
        /// The end of the route's request: serve it.
        case serve(request: Int)
        /// A part of a request already answered (refused by its head): drop it.
        case drop
    }

    /// Which request the parts being read belong to.
    private enum Reading {
        case none
        case ours(Int)
        /// Ours, and answered already.
        case answered
        case router
    }

    private var reading = Reading.none
    private var nextRequest = 0
    /// The route's requests, in order, with their answers once given.
    private var waiting: CircularBuffer<(request: Int, answer: SendController.Answer?)> = []
    /// Requests given to the router whose answer has not ended yet.
    private var forwarded = 0
    /// Parts read that wait for the other side.
    private var held: CircularBuffer<Part> = []

    /// Most `/send/` requests of one connection answered at a time: past this, the
    /// route reads no more until answers are out.
    static let maximumPipelined = 64

    /// Whether the route should read no more for now: parts are held, or enough requests wait.
    var pausesReading: Bool {
        !held.isEmpty || waiting.count >= Self.maximumPipelined
    }

    /// Whether requests of the route's own are unanswered.
    var isServing: Bool { !waiting.isEmpty }

    /// Whether the router has requests unanswered.
    var routerIsAnswering: Bool { forwarded > 0 }

    /// Whether a request given to the router has had its head and not yet its end.
    var routerIsReadingARequest: Bool {
        if case .router = reading { return true }
        return false
    }

    /// Whether parts wait for ``takeHeld()``.
    var holds: Bool { !held.isEmpty }

    mutating func read(_ part: Part) -> ReadAction {
        guard held.isEmpty else {
            held.append(part)
            return .hold
        }
        switch (part, reading) {
        case (.head(_, ours: true), _):
            guard forwarded == 0 else { return hold(part) }
            let request = nextRequest
            nextRequest += 1
            waiting.append((request, nil))
            reading = .ours(request)
            return .start(request: request)
        case (.head(_, ours: false), _):
            guard waiting.isEmpty else { return hold(part) }
            forwarded += 1
            reading = .router
            return .forward
        case (.body, .ours):
            return .collect
        case (.end, .ours(let request)):
            reading = .none
            return .serve(request: request)
        case (.body, .answered):
            return .drop
        case (.end, .answered):
            reading = .none
            return .drop
        case (.body, .router), (.body, .none):
            return .forward
        case (.end, .router), (.end, .none):
            reading = .none
            return .forward
        }
    }

    private mutating func hold(_ part: Part) -> ReadAction {
        held.append(part)
        return .hold
    }

    /// The route answered `request`. Returns the answers that may now be written, in
    /// order (none while an earlier request is still unanswered).
    mutating func answered(_ request: Int, with answer: SendController.Answer) -> [SendController.Answer] {
        if case .ours(request) = reading { reading = .answered }
        guard let index = waiting.firstIndex(where: { $0.request == request }) else { return [] }
        waiting[index].answer = answer
        var ready: [SendController.Answer] = []
        while let first = waiting.first, let answer = first.answer {
            ready.append(answer)
            waiting.removeFirst()
        }
        return ready
    }

    /// The router's answer to a forwarded request has ended.
    mutating func routerAnswered() {
        forwarded = max(0, forwarded - 1)
    }

    /// The parts held, once neither side has answers outstanding that they wait for;
    /// the route reads them again, in order.
    mutating func takeHeld() -> [Part] {
        guard !held.isEmpty, waiting.isEmpty, forwarded == 0 else { return [] }
        defer { held.removeAll() }
        return Array(held)
    }
}
