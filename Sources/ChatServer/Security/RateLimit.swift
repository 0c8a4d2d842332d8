import Foundation

/// A limit of `rate` a second (or a minute, where a setting says so) with bursts up to `burst`, as a token bucket enforces it.
public struct RateLimit: Sendable, Equatable {
    /// Tokens added a second.
    public var rate: Double
    /// Most tokens held at once: how many may come together after a quiet spell.
    public var burst: Double

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
    }

    /// The rate as refusals state it: `20`, or `2.5`.
    var described: String {
        rate == rate.rounded() ? String(Int(rate)) : String(format: "%.1f", rate)
    }
}
