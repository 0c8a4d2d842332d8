/// Exponential backoff with jitter for reconnecting to Redis.
///
/// The first retry comes after about `initial`; each failure doubles the delay up to
/// `maximum`; each delay is drawn at random from its upper half so that many
/// instances restarting together do not reconnect in lockstep.
public struct Backoff: Sendable {
    /// The first delay.
    public var initial: Duration
    /// The longest delay.
    public var maximum: Duration
    private var failures = 0

    /// Creates a backoff, by default 100 ms growing to 5 s.
    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt; each call counts one more failure.
    public mutating func next() -> Duration {
        let exponent = min(failures, 30)
        failures += 1
        let ceiling = min(maximum, initial * (1 << exponent))
        let fraction = Double.random(in: 0.5...1.0)
        return ceiling * fraction
    }

    /// Starts again from `initial` after a success.
    public mutating func reset() {
        failures = 0
    }
}
