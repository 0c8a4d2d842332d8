/// Values remembered under a key until a deadline: the memory broker's idempotency keys.
///
/// Expired keys are swept whenever the table has doubled since the last sweep, so its
/// size stays within twice the keys alive at once (publishes a second × the window).
struct RecentKeys<Value: Sendable>: Sendable {
    private var entries: [String: (value: Value, until: ContinuousClock.Instant)] = [:]
    private var sweepAt = 1024

    /// The value under `key`, if it is still remembered at `now`.
    func first(_ key: String, now: ContinuousClock.Instant) -> Value? {
        guard let entry = entries[key], entry.until > now else { return nil }
        return entry.value
    }

    /// Remembers `value` under `key` until `until`.
    mutating func remember(_ key: String, _ value: Value, until: ContinuousClock.Instant) {
        if entries.count >= sweepAt {
            let now = ContinuousClock.now
            entries = entries.filter { $0.value.until > now }
            sweepAt = max(1024, entries.count * 2)
        }
        entries[key] = (value, until)
    }
}
