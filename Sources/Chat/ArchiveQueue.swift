import NIOConcurrencyHelpers

/// The channels an archive feed looks at, in order, each once: those with new messages
/// go to the front, and each one looked at goes to the back.
final class ArchiveQueue: Sendable {
    /// Channels looked at in one take.
    static let channelsPerTake = 32

    private struct State {
        var order: [ChannelName] = []
        var members: Set<ChannelName> = []
        var lastScan: ContinuousClock.Instant?
        /// Channels another archiver holds, left alone until then.
        var resting: [ChannelName: ContinuousClock.Instant] = [:]
        /// A channel came since the archiver last waited.
        var rung = false
        /// Archivers waiting for a channel to come.
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = NIOLockedValueBox(State())

    func add(_ channel: ChannelName, first: Bool = false) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            if !state.resting.isEmpty, let until = state.resting[channel] {
                guard ContinuousClock.now >= until else { return [] }
                state.resting[channel] = nil
            }
            guard state.members.insert(channel).inserted else { return [] }
            if first { state.order.insert(channel, at: 0) } else { state.order.append(channel) }
            state.rung = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until a channel comes (one came since the last wait: at once), or `timeout`
    /// passes: an idle archiver takes a message within moments of its publish, not at its
    /// next look.
    func waitForChannels(upTo timeout: Duration) async {
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.wake()
        }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { state -> Bool in
                if state.rung { return true }
                state.waiters.append(waiter)
                return false
            }
            if now { waiter.resume() }
        }
        timer.cancel()
        state.withLockedValue { $0.rung = false }
    }

    private func wake() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The channel has nothing waiting; or (`resting`) another archiver holds it, and
    /// its new messages are that one's to take for so long: this archiver looks again
    /// after it (taking the channel over if its holder has gone).
    func remove(_ channel: ChannelName, resting: Duration? = nil) {
        state.withLockedValue { state in
            if let resting { state.resting[channel] = ContinuousClock.now + resting }
            guard state.members.remove(channel) != nil else { return }
            state.order.removeAll { $0 == channel }
        }
    }

    /// Up to `count` channels to look at, from the front; each goes to the back.
    func next(_ count: Int) -> [ChannelName] {
        state.withLockedValue { state in
            let taken = Array(state.order.prefix(count))
            state.order.removeFirst(taken.count)
            state.order.append(contentsOf: taken)
            return taken
        }
    }

    /// Whether a scan is due (and if so, it counts as started now).
    func scanDue(every interval: Duration) -> Bool {
        state.withLockedValue { state in
            let now = ContinuousClock.now
            if let last = state.lastScan, now - last < interval { return false }
            state.lastScan = now
            return true
        }
    }
}
