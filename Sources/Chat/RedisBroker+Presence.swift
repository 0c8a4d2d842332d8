import Redis

/// Who is in a room, over every instance: leases per member and instance in a sorted
/// set, names beside them, and the admission of a capped room, each one Lua script.
extension RedisBroker {
    public func updatePresence(
        of channel: ChannelName, instance: String, refreshing: [Member], leaving: [String],
        lifetime: Duration, grace: Duration, listLimit: Int
    ) async throws -> RoomSnapshot {
        var arguments: [RedisArgument] = [
            .string(instance), .integer(Self.milliseconds(lifetime)), .integer(Self.milliseconds(grace)), .integer(listLimit), .integer(refreshing.count),
        ]
        for member in refreshing { arguments += [.string(member.id), .string(member.name ?? "")] }
        arguments += leaving.map { .string($0) }
        let reply = try await Self.run(
            Self.presenceScript, keys: [RedisKeys.leases(channel), RedisKeys.names(channel)], arguments: arguments, commands: commands, scripts: scripts
        )
        guard let parts = reply.array, let online = parts.first?.integer else { throw BrokerError(.failed, "Redis answered the presence script with \(reply)") }
        guard parts.count > 1 || online == 0 else { return RoomSnapshot(online: Int(online), members: nil) }
        let members = stride(from: 1, to: parts.count - 1, by: 2).compactMap { index -> Member? in
            guard let id = parts[index].string else { return nil }
            let name = parts[index + 1].string
            return Member(id: id, name: name?.isEmpty == false ? name : nil)
        }
        return RoomSnapshot(online: Int(online), members: members)
    }

    public func admit(_ member: String, to channel: ChannelName, instance: String, cap: Int, lifetime: Duration) async throws -> Bool {
        let reply = try await Self.run(
            Self.admitScript, keys: [RedisKeys.leases(channel)],
            arguments: [.string(instance), .string(member), .integer(cap), .integer(Self.milliseconds(lifetime))], commands: commands, scripts: scripts
        )
        return reply.integer == 1
    }
}
