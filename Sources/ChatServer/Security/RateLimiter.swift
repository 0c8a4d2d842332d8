import NIOConcurrencyHelpers
import NIOCore

/// Token buckets per key (a client address): `rate` tokens a second, at most `burst`.
///
/// Buckets live in a few lock-protected shards so that concurrent requests rarely wait
/// on one another; a bucket that has refilled completely carries no information and is
/// dropped when its shard is swept, so a flood of distinct addresses cannot grow memory
/// without bound (a full shard is swept before it takes a new key).
final class RateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var updated: NIODeadline
    }

    let rate: Double
    let burst: Double
    private let shards: [NIOLockedValueBox<[String: Bucket]>]
    private let maximumKeysPerShard: Int

    init(rate: Double, burst: Double, maximumKeys: Int = 100_000) {
        precondition(rate > 0 && burst >= 1)
        self.rate = rate
        self.burst = burst
        self.shards = (0..<16).map { _ in NIOLockedValueBox([:]) }
        self.maximumKeysPerShard = max(1, maximumKeys / 16)
    }

    /// Takes one token for `key`; `nil` if there was one, else how long until there is.
    func take(_ key: String, now: NIODeadline = .now()) -> TimeAmount? {
        let shard = shards[Int(UInt(bitPattern: key.hashValue) % UInt(shards.count))]
        return shard.withLockedValue { buckets in
            if buckets[key] == nil, buckets.count >= maximumKeysPerShard {
                sweep(&buckets, now: now)
                // Still full of active keys: refuse rather than grow.
                if buckets.count >= maximumKeysPerShard { return .seconds(1) }
            }
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = min(burst, bucket.tokens + Double((now - bucket.updated).nanoseconds) / 1e9 * rate)
            bucket.updated = now
            defer { buckets[key] = bucket }
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                return nil
            }
            return .nanoseconds(Int64((1 - bucket.tokens) / rate * 1e9))
        }
    }

    /// How many whole tokens `key` has now, without taking any.
    func tokens(_ key: String, now: NIODeadline = .now()) -> Int {
        let shard = shards[Int(UInt(bitPattern: key.hashValue) % UInt(shards.count))]
        return shard.withLockedValue { buckets in
            guard let bucket = buckets[key] else { return Int(burst) }
            return Int(min(burst, bucket.tokens + Double((now - bucket.updated).nanoseconds) / 1e9 * rate))
        }
    }

    /// Whether `key` has a token now, without taking it.
    func hasToken(_ key: String, now: NIODeadline = .now()) -> Bool {
        let shard = shards[Int(UInt(bitPattern: key.hashValue) % UInt(shards.count))]
        return shard.withLockedValue { buckets in
            guard let bucket = buckets[key] else { return true }
            return min(burst, bucket.tokens + Double((now - bucket.updated).nanoseconds) / 1e9 * rate) >= 1
        }
    }

    private func sweep(_ buckets: inout [String: Bucket], now: NIODeadline) {
        buckets = buckets.filter { _, bucket in
            bucket.tokens + Double((now - bucket.updated).nanoseconds) / 1e9 * rate < burst
        }
    }
}

/// A token bucket for one socket's inbound messages: used on its event loop only.
struct SocketRateLimit {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var updated: NIODeadline

    init(rate: Double, burst: Double, now: NIODeadline = .now()) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now
    }

    /// Takes one token; `false` if the socket sends faster than allowed.
    mutating func take(now: NIODeadline = .now()) -> Bool {
        tokens = min(burst, tokens + Double((now - updated).nanoseconds) / 1e9 * rate)
        updated = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
