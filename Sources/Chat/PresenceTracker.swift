import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Who is in each room, over every instance, told to chat.v1 sockets.
///
/// A person is an identity (the `uid` cookie; a socket without one is a person of its
/// own), so several tabs of one browser are one person. Each instance holds a lease per
/// person it serves in a room, in the broker, renewed every ``heartbeat`` for
/// ``lifetime``: an instance that crashes stops renewing and its people leave within
/// ``lifetime``. When a person's last socket here closes, their lease is cut to
/// ``grace``: a reconnect within it (to any instance) shows no leave.
///
/// Every ``interval`` the instance sends its changes, reads each room it serves, and
/// tells its sockets: `members` (everyone) at the first read of a room, then `join` and
/// `leave` for the differences since the last read, and `presence` when the count
/// changed. A socket that opens later is sent the last read (``snapshot(of:)``) at once.
/// Rooms with more than ``listLimit`` people get the count only.
public final class PresenceTracker: Service, Sendable {
    /// This instance's name in leases.
    public let instance: String
    /// How often rooms are read and changes told.
    public let interval: Duration
    /// How often this instance's leases are renewed.
    public let heartbeat: Duration
    /// How long a lease lasts without renewal.
    public let lifetime: Duration
    /// How long someone stays after their last socket closed.
    public let grace: Duration
    /// Rooms with more people than this are told the count, not the list.
    public let listLimit: Int
    private let broker: any Broker
    private let deliver: @Sendable ([ChatEvent]) -> Void
    private let encode: @Sendable (ChatEvent) -> [ByteBuffer?]
    private let logger: Logger
    private let state = NIOLockedValueBox([ChannelName: RoomState]())

    private struct RoomState {
        /// Sockets per identity on this instance, and the name each gave last.
        var sockets: [String: Int] = [:]
        var names: [String: String] = [:]
        var added: Set<String> = []
        var removed: Set<String> = []
        var socketJoined = false
        var lastRefresh: ContinuousClock.Instant?
        /// What the sockets were told last.
        var told: RoomSnapshot?
        /// Changes whenever `told` does.
        var revision: UInt64 = 0
        /// `told` as a `members` event's frames, made at the first socket that asked for
        /// them and shared by every socket that opens before the next change.
        var membersFrames: [ByteBuffer?]?
    }

    /// Creates a tracker; run it as a service.
    public init(
        broker: any Broker,
        instance: String,
        interval: Duration = .seconds(1),
        heartbeat: Duration = .seconds(10),
        lifetime: Duration = .seconds(30),
        grace: Duration = .seconds(10),
        listLimit: Int = 500,
        logger: Logger,
        encode: @escaping @Sendable (ChatEvent) -> [ByteBuffer?] = { _ in [] },
        deliver: @escaping @Sendable ([ChatEvent]) -> Void
    ) {
        self.encode = encode
        self.broker = broker
        self.instance = instance
        self.interval = interval
        self.heartbeat = heartbeat
        self.lifetime = lifetime
        self.grace = grace
        self.listLimit = listLimit
        self.logger = logger
        self.deliver = deliver
    }

    /// People renewed per call to the broker.
    static let renewalSlice = 1000

    /// A socket of `member` opened in `channel`.
    public func join(_ channel: ChannelName, member: Member) {
        state.withLockedValue { state in
            var room = state[channel] ?? RoomState()
            let count = room.sockets[member.id, default: 0] + 1
            room.sockets[member.id] = count
            room.socketJoined = true
            if count == 1 || room.names[member.id] != member.name {
                room.added.insert(member.id)
                room.removed.remove(member.id)
            }
            room.names[member.id] = member.name
            state[channel] = room
        }
    }

    /// A socket of `id` closed in `channel`.
    public func leave(_ channel: ChannelName, id: String) {
        state.withLockedValue { state in
            guard var room = state[channel], let count = room.sockets[id] else { return }
            if count > 1 {
                room.sockets[id] = count - 1
            } else {
                room.sockets[id] = nil
                room.names[id] = nil
                room.added.remove(id)
                room.removed.insert(id)
            }
            state[channel] = room
        }
    }

    /// What the sockets of `channel` were told last: the count, and the people.
    public func snapshot(of channel: ChannelName) -> RoomSnapshot? {
        state.withLockedValue { $0[channel]?.told }
    }

    /// ``snapshot(of:)`` as the frames of a `members` event (indexed as the hub's
    /// `encode` indexes them), when it lists the people: encoded once per change of the
    /// room, not once per socket that opens (a room of 500 is a 12 KB frame, and a
    /// reconnect storm opens thousands of sockets in it at once).
    public func membersFrames(of channel: ChannelName) -> [ByteBuffer?]? {
        let known = state.withLockedValue { state -> (RoomSnapshot, UInt64, [ByteBuffer?]?)? in
            guard let room = state[channel], let told = room.told, told.members != nil else { return nil }
            return (told, room.revision, room.membersFrames)
        }
        guard let (told, revision, cached) = known else { return nil }
        if let cached { return cached }
        let frames = encode(.members(channel: channel, online: told.online, members: told.members ?? []))
        state.withLockedValue { state in
            if state[channel]?.revision == revision { state[channel]?.membersFrames = frames }
        }
        return frames
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tick()
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// Sends every room's changes to the broker, reads who is there, tells the sockets.
    func tick() async {
        let now = ContinuousClock.now
        let work = state.withLockedValue { state -> [(ChannelName, refreshing: [Member], leaving: [String], socketJoined: Bool)] in
            Array(state.keys).map { channel in
                var room = state[channel]!
                let refresh = room.lastRefresh.map { now - $0 >= heartbeat } ?? true
                let ids = refresh ? Array(room.sockets.keys) : Array(room.added)
                let leaving = Array(room.removed)
                let socketJoined = room.socketJoined
                if refresh { room.lastRefresh = now }
                room.added.removeAll()
                room.removed.removeAll()
                // A socket that opens during this tick's read is told at the next one: the
                // count read now might not include it yet.
                room.socketJoined = false
                state[channel] = room
                return (channel, ids.map { Member(id: $0, name: room.names[$0]) }, leaving, socketJoined)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for (channel, refreshing, leaving, socketJoined) in work {
                group.addTask {
                    do {
                        // A big room's renewal goes in slices, so that no one call (and no
                        // one buffer) grows with the room.
                        var rest = refreshing[...]
                        while rest.count > Self.renewalSlice {
                            _ = try await self.broker.updatePresence(
                                of: channel, instance: self.instance, refreshing: Array(rest.prefix(Self.renewalSlice)), leaving: [],
                                lifetime: self.lifetime, grace: self.grace, listLimit: -1
                            )
                            rest = rest.dropFirst(Self.renewalSlice)
                        }
                        let snapshot = try await self.broker.updatePresence(
                            of: channel, instance: self.instance, refreshing: Array(rest), leaving: leaving,
                            lifetime: self.lifetime, grace: self.grace, listLimit: self.listLimit
                        )
                        self.read(snapshot, of: channel, socketJoined: socketJoined)
                    } catch {
                        // Try again at the next tick; leases stay until they end.
                        self.state.withLockedValue { state in
                            guard var room = state[channel] else { return }
                            room.added.formUnion(refreshing.map(\.id).filter { room.sockets[$0] != nil })
                            room.removed.formUnion(leaving.filter { room.sockets[$0] == nil })
                            room.lastRefresh = nil
                            room.socketJoined = room.socketJoined || socketJoined
                            state[channel] = room
                        }
                        self.logger.debug("Cannot read who is in a room now", metadata: ["channel": "\(channel)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    /// - Parameter socketJoined: a socket opened before the read began: tell the count
    ///   even if it did not change, so that the new socket learns it.
    private func read(_ snapshot: RoomSnapshot, of channel: ChannelName, socketJoined: Bool) {
        let events = state.withLockedValue { state -> [ChatEvent] in
            guard var room = state[channel] else { return [] }
            defer {
                // A room nobody here is in any more is forgotten once its leaves are sent.
                state[channel] = room.sockets.isEmpty && room.removed.isEmpty ? nil : room
            }
            guard !room.sockets.isEmpty else { return [] }
            var events: [ChatEvent] = []
            let before = room.told
            if let people = snapshot.members {
                if before?.members == nil {
                    events.append(.members(channel: channel, online: snapshot.online, members: people))
                } else if let known = before?.members {
                    let old = Dictionary(known.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
                    let new = Set(people.map(\.id))
                    for member in people where old[member.id] != member {
                        events.append(.join(channel: channel, member: member))
                    }
                    for member in known where !new.contains(member.id) {
                        events.append(.leave(channel: channel, member: member))
                    }
                }
            }
            if snapshot.online != before?.online || socketJoined {
                events.append(.presence(channel: channel, online: snapshot.online))
            }
            if room.told != snapshot {
                room.told = snapshot
                room.revision &+= 1
                room.membersFrames = nil
            }
            return events
        }
        if !events.isEmpty { deliver(events) }
    }
}
