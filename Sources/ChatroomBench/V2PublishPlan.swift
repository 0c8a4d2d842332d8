import NIOConcurrencyHelpers

/// What the chat.v2 publishers of one run share: what to send, how fast, until when.
final class V2PublishPlan: Sendable {
    let channels: [String]
    let padding: String
    /// Makes this run's ids its own: the server remembers ids (`--dedupe-window`) per
    /// identity and channel, and a repeated id is acknowledged without being published.
    let nonce: String
    /// Unacknowledged sends per socket.
    let window: Int
    /// Messages per second for all publishers together; `nil`: as fast as acks come back.
    let rate: Double?
    let publishers: Int
    /// Messages to send in all; `nil`: as many as the time allows.
    let messages: UInt64?
    /// How long to send, counted from ``begin(at:)``.
    let duration: UInt64
    private let begun = NIOLockedValueBox<UInt64>(0)
    private let stopped = NIOLockedValueBox(false)

    init(channels: [String], padding: Int, window: Int, rate: Double?, publishers: Int, messages: UInt64?, seconds: Double) {
        self.channels = channels
        self.padding = String(repeating: "p", count: padding)
        nonce = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        self.window = window
        self.rate = rate
        self.publishers = publishers
        self.messages = messages
        duration = UInt64(seconds * 1e9)
    }

    /// Messages publisher `index` sends at most: its share of ``messages``.
    func quota(of index: Int) -> UInt64 {
        guard let messages else { return .max }
        let (share, rest) = messages.quotientAndRemainder(dividingBy: UInt64(publishers))
        return share + (UInt64(index) < rest ? 1 : 0)
    }

    /// When sending began (monotonic ns); the paced schedule counts from it.
    var start: UInt64 { begun.withLockedValue { $0 } }
    func begin(at time: UInt64) { begun.withLockedValue { $0 = time } }

    /// Sends no more (acks of what was sent still count).
    func stop() { stopped.withLockedValue { $0 = true } }
    var isStopped: Bool { stopped.withLockedValue { $0 } }
}
