import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Who is in each channel: the people online, counted over every instance, told to
/// chat.v1 sockets as `presence` events at most once per ``interval`` per channel.
///
/// A person is a client id (the page's `cid` cookie), so several tabs of one browser
/// count once; a socket without one counts as a person of its own. Each instance keeps
/// its sockets' ids in the broker (Redis: a sorted set per channel scored by expiry)
/// and refreshes them every ``heartbeat``; ids of an instance that stops refreshing
/// expire after ``lifetime``. Every ``interval`` the instance reads the count of each
/// channel it serves and tells its sockets when it changed, or when a socket joined.
public final class PresenceTracker: Service, Sendable {
    /// How often counts are read and changes told.
    public let interval: Duration
    /// How often this instance's ids are refreshed in the broker.
    public let heartbeat: Duration
    /// How long an id counts without a refresh.
    public let lifetime: Duration
    private let broker: any Broker
    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let logger: Logger
    private let state = NIOLockedValueBox([ChannelName: ChannelState]())

    private struct ChannelState {
        /// Sockets per client id on this instance.
        var sockets: [String: Int] = [:]
        var added: Set<String> = []
        var removed: Set<String> = []
        var lastTold: Int?
        var socketJoined = false
        var lastRefresh: ContinuousClock.Instant?
    }

    /// Creates a tracker; run it as a service.
    public init(
        broker: any Broker,
        interval: Duration = .seconds(1),
        heartbeat: Duration = .seconds(10),
        lifetime: Duration = .seconds(30),
        logger: Logger,
        deliver: @escaping @Sendable ([ChatEvent]) -> Void
    ) {
        self.broker = broker
        self.interval = interval
        self.heartbeat = heartbeat
        self.lifetime = lifetime
        self.logger = logger
        self.deliver = deliver
    }

    /// A socket of `client` opened in `channel`.
    public func join(_ channel: ChannelName, client: String) {
        state.withLockedValue { state in
            var entry = state[channel] ?? ChannelState()
            let count = entry.sockets[client, default: 0] + 1
            entry.sockets[client] = count
            entry.socketJoined = true
            if count == 1 {
                entry.added.insert(client)
                entry.removed.remove(client)
            }
            state[channel] = entry
        }
    }

    /// A socket of `client` closed in `channel`.
    public func leave(_ channel: ChannelName, client: String) {
        state.withLockedValue { state in
            guard let count = state[channel]?.sockets[client] else { return }
            if count > 1 {
                state[channel]!.sockets[client] = count - 1
            } else {
                state[channel]!.sockets[client] = nil
                state[channel]!.added.remove(client)
                state[channel]!.removed.insert(client)
            }
        }
    }

    /// The last count told for `channel`.
    public func online(in channel: ChannelName) -> Int? {
        state.withLockedValue { $0[channel]?.lastTold }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tick()
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// Sends every channel's changes to the broker, reads the counts, tells the sockets.
    func tick() async {
        let now = ContinuousClock.now
        let work = state.withLockedValue { state -> [(ChannelName, adding: [String], removing: [String])] in
            Array(state.keys).map { channel in
                let refresh = state[channel]!.lastRefresh.map { now - $0 >= heartbeat } ?? true
                let adding = refresh ? Array(state[channel]!.sockets.keys) : Array(state[channel]!.added)
                let removing = Array(state[channel]!.removed)
                if refresh { state[channel]!.lastRefresh = now }
                state[channel]!.added.removeAll()
                state[channel]!.removed.removeAll()
                return (channel, adding, removing)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for (channel, adding, removing) in work {
                group.addTask {
                    do {
                        let online = try await self.broker.updatePresence(of: channel, adding: adding, removing: removing, lifetime: self.lifetime)
                        self.counted(online, in: channel)
                    } catch {
                        // Try again at the next tick; ids stay until their lifetime ends.
                        self.state.withLockedValue { state in
                            guard var entry = state[channel] else { return }
                            entry.added.formUnion(adding.filter { entry.sockets[$0] != nil })
                            entry.removed.formUnion(removing.filter { entry.sockets[$0] == nil })
                            entry.lastRefresh = nil
                            state[channel] = entry
                        }
                        self.logger.debug("Cannot count who is in a channel now", metadata: ["channel": "\(channel)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    private func counted(_ online: Int, in channel: ChannelName) {
        let tell = state.withLockedValue { state -> Bool in
            guard var entry = state[channel] else { return false }
            defer {
                // A channel nobody here is in any more is forgotten once its leaves are sent.
                state[channel] = entry.sockets.isEmpty && entry.removed.isEmpty ? nil : entry
            }
            guard !entry.sockets.isEmpty, online != entry.lastTold || entry.socketJoined else { return false }
            entry.lastTold = online
            entry.socketJoined = false
            return true
        }
        if tell { deliver([.presence(channel: channel, online: online)]) }
    }
}
