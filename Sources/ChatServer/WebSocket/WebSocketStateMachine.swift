import NIOCore
import NIOWebSocket

/// One server-side WebSocket connection as RFC 6455 sees it: frames in, the close
/// handshake, ping liveness and the inbound message rate.
///
/// A value without I/O, shared by ``ChatSocket`` and ``EchoSocket``: the handler feeds
/// it frames and timer ticks and carries out the returned action.
struct WebSocketStateMachine {
    enum State: Equatable {
        case open
        /// The server sent its close frame, or answered the client's: waiting to hang up.
        case closing
        case closed
    }

    /// What to do with a frame that arrived.
    enum Inbound: Equatable {
        /// Nothing (a fragment, a pong, or anything but a close frame while closing).
        case ignore
        /// The client sends faster than its rate: close with `policyViolation`.
        case tooFast
        case text(String)
        case binary(ByteBuffer)
        /// Answer a ping with this payload.
        case pong(ByteBuffer)
        /// The client closed first: echo its close code (RFC 6455 §5.5.1), then hang up.
        case echoClose(code: UInt16?)
        /// The client answered the server's close: hang up now.
        case hangUp
        /// The client broke the protocol: close with this code and reason.
        case fail(WebSocketCloseCode, String)
    }

    /// What to do at a heartbeat tick.
    enum Heartbeat: Equatable {
        case none
        case ping
        /// The previous ping went unanswered: hang up without a close handshake.
        case hangUp
    }

    private(set) var state = State.open
    private var pingOutstanding = false
    private var rateLimit: SocketRateLimit?
    private var assembler: MessageAssembler

    init(assembler: MessageAssembler, messageRate: RateLimit?, now: NIODeadline = .now()) {
        self.assembler = assembler
        self.rateLimit = messageRate.map { SocketRateLimit(rate: $0.rate, burst: $0.burst, now: now) }
    }

    var isOpen: Bool { state == .open }

    mutating func received(_ frame: WebSocketFrame, now: NIODeadline = .now()) -> Inbound {
        // Closing: only the client's close frame matters; anything else costs nothing more.
        guard state == .open || frame.opcode == .connectionClose else { return .ignore }
        // Every frame counts against the rate, pongs and empty continuations too: each
        // costs the server work whether or not it completes a message. With frames
        // counted, bytes are bounded too: no frame is larger than the message limit.
        if state == .open, rateLimit?.take(now: now) == false { return .tooFast }
        switch assembler.receive(frame) {
        case .none:
            return .ignore
        case .text(let text):
            return .text(text)
        case .binary(let data):
            return .binary(data)
        case .ping(let payload):
            return state == .open ? .pong(payload) : .ignore
        case .pong:
            pingOutstanding = false
            return .ignore
        case .close(let code):
            guard state == .open else { return .hangUp }
            state = .closing
            return .echoClose(code: code)
        case .fail(let code, let reason):
            return .fail(code, reason)
        }
    }

    /// The server wants to close: `true` if a close frame should go out now (once).
    mutating func close() -> Bool {
        guard state == .open else { return false }
        state = .closing
        return true
    }

    mutating func heartbeat() -> Heartbeat {
        guard state == .open else { return .none }
        if pingOutstanding {
            state = .closed
            return .hangUp
        }
        pingOutstanding = true
        return .ping
    }

    /// The client hung up or the connection is gone.
    mutating func hungUp() {
        state = .closed
    }
}
