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
    }

    private let state = NIOLockedValueBox(State())

    func add(_ channel: ChannelName, first: Bool = false) {
        state.withLockedValue { state in
            guard state.members.insert(channel).inserted else { return }
            if first { state.order.insert(channel, at: 0) } else { state.order.append(channel) }
        }
    }

    func remove(_ channel: ChannelName) {
        state.withLockedValue { state in
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
