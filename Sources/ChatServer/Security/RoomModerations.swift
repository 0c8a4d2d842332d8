import Chat
import NIOConcurrencyHelpers

/// Each room's moderation as this instance knows it, so that a join, a subscribe or a
/// `/history` read can refuse a banned person without a Redis command of its own.
///
/// A room is read from the broker once (callers that ask meanwhile share the read) and
/// kept for ``freshFor``; the moderation signals this instance receives (those of the
/// channels it subscribes to) change the kept state at once. A reconnect storm thus
/// costs about one read per room and second, however many sockets come back.
final class RoomModerations: Sendable {
    /// How long a read stays good.
    static let freshFor: Duration = .seconds(1)
    /// Rooms kept at most; past it, rooms whose read is stale are forgotten.
    static let maximumRooms = 10_000

    private let rooms = NIOLockedValueBox([ChannelName: Entry]())

    private struct Entry {
        var room: RoomModeration?
        var read = ContinuousClock.now
        var loading: Task<RoomModeration, any Error>?
        /// Bumped by every signal: a read that started before one is not kept.
        var generation: UInt64 = 0
    }

    /// The room's moderation if a fresh read of it is kept (no waiting, no Redis).
    func kept(_ channel: ChannelName, now: ContinuousClock.Instant = .now) -> RoomModeration? {
        rooms.withLockedValue { rooms in
            guard let entry = rooms[channel], let room = entry.room, now - entry.read < Self.freshFor else { return nil }
            return room
        }
    }

    /// The room's moderation: the kept one while fresh, else read from `broker` (once
    /// for everyone who asks meanwhile).
    /// - Throws: ``BrokerError`` when the broker cannot say.
    func room(of channel: ChannelName, from broker: any Broker) async throws -> RoomModeration {
        let now = ContinuousClock.now
        if let room = kept(channel, now: now) { return room }
        let (task, generation, started): (Task<RoomModeration, any Error>, UInt64, Bool) = rooms.withLockedValue { rooms in
            if let loading = rooms[channel]?.loading { return (loading, 0, false) }
            if rooms.count >= Self.maximumRooms { rooms = rooms.filter { now - $0.value.read < Self.freshFor || $0.value.loading != nil } }
            let task = Task { try await broker.moderation(of: channel) }
            rooms[channel, default: Entry()].loading = task
            return (task, rooms[channel]!.generation, true)
        }
        let result = await task.result
        if started {
            rooms.withLockedValue { rooms in
                rooms[channel]?.loading = nil
                guard case .success(let room) = result, rooms[channel]?.generation == generation else { return }
                rooms[channel]?.room = room
                rooms[channel]?.read = now
            }
        }
        return try result.get()
    }

    /// Takes in what the broker delivers: a moderation signal changes the kept room.
    func observe(_ events: [ChatEvent]) {
        for case .moderation(let channel, let change) in events {
            rooms.withLockedValue { rooms in
                guard rooms[channel] != nil else { return }
                rooms[channel]!.generation &+= 1
                rooms[channel]!.room?.apply(change)
            }
        }
    }
}
