import NIOConcurrencyHelpers
import Redis

/// The archive's feed from Redis: each channel's history stream has a consumer group
/// (`archive`) that hands every entry to one archiver and keeps it pending until that
/// archiver acknowledges it (`XREADGROUP`, `XACK`).
///
/// One instance at a time archives a channel: the take script holds the channel for
/// ``HistoryPolicy/archiveHold`` (renewed by each take), so the archive gets each channel in
/// offset order. An archiver that dies lets its hold lapse, and the next one to take
/// the channel first claims everything left pending by anyone (`XAUTOCLAIM`), then reads
/// on. Once a batch is archived the stream is cut back to the history size, never past
/// the oldest entry not archived.
///
/// Which channels to look at: those this instance publishes to (at once), and every
/// history stream in Redis, found by a `SCAN` every ``scanInterval`` (of each primary on a
/// Redis Cluster): what other instances published and could not archive.
extension RedisBroker: ArchiveFeed {
    /// How often the whole of Redis is scanned for history streams.
    static let scanInterval: Duration = .seconds(10)

    public func due(_ channel: ChannelName) {
        archiveQueue.add(channel, first: true)
    }

    public func waitForMessages(upTo timeout: Duration) async {
        await archiveQueue.waitForChannels(upTo: timeout)
    }

    public func take(_ limit: Int, for archiver: String) async throws -> [ArchiveBatch] {
        if archiveQueue.scanDue(every: Self.scanInterval) { try await scanForHistories() }
        // A few channels at once, side by side: one with nothing waiting leaves the queue.
        let channels = archiveQueue.next(ArchiveQueue.channelsPerTake)
        return try await withThrowingTaskGroup(of: ArchiveBatch?.self) { group in
            for channel in channels {
                group.addTask { try await self.take(limit, of: channel, for: archiver) }
            }
            var batches: [ArchiveBatch] = []
            for try await batch in group {
                if let batch { batches.append(batch) }
            }
            return batches
        }
    }

    /// The oldest of one channel's entries not archived yet; `nil` (and the channel out of
    /// the queue) when there are none, or another archiver holds the channel.
    private func take(_ limit: Int, of channel: ChannelName, for archiver: String) async throws -> ArchiveBatch? {
        let reply = try await Self.run(
            Self.archiveTakeScript,
            keys: [RedisKeys.meta(channel), RedisKeys.history(channel), RedisKeys.archiving(channel), RedisKeys.changes(channel)],
            arguments: [.string(archiver), .integer(Self.milliseconds(policy.archiveHold)), .integer(Int64(max(1, limit)))], commands: commands,
            scripts: scripts
        )
        guard let parts = reply.array, parts.count == 4 else { throw BrokerError(.failed, "Redis answered the archive's take with \(reply)") }
        let entries = parts[1].array ?? []
        guard !entries.isEmpty, let epoch = parts[0].string else {
            // Archived; or held by another archiver, theirs to see through: looked at
            // again after half a hold, not at each publish here.
            archiveQueue.remove(channel, resting: parts[2].integer == 1 ? policy.archiveHold / 2 : nil)
            return nil
        }
        var messages: [Message] = []
        var ids: [String] = []
        for entry in entries {
            guard let pair = entry.array, pair.count == 2, let id = pair[0].string else { continue }
            ids.append(id)
            guard let offset = id.split(separator: "-").first.flatMap({ Int64($0) }),
                let message = StoredEntry.message(channel: channel, offset: offset, epoch: epoch, fields: pair[1].array, state: nil)
            else { continue }
            messages.append(message)
        }
        var batch = ArchiveBatch(channel: channel, messages: messages, entries: ids)
        batch.lost = parts[3].integer.map { Int(max(0, $0)) } ?? 0
        return batch
    }

    public func archived(_ batch: ArchiveBatch, by archiver: String) async throws {
        guard !batch.entries.isEmpty else { return }
        let channel = batch.channel
        _ = try await Self.run(
            Self.archivedScript, keys: [RedisKeys.meta(channel), RedisKeys.history(channel), RedisKeys.archiving(channel)],
            arguments: [.string(archiver), .integer(Int64(policy.size))] + batch.entries.map { .string($0) }, commands: commands, scripts: scripts
        )
    }

    /// Every history stream in Redis goes into the queue: of the one server, or of each
    /// primary of a cluster (a scan covers one node's keys).
    private func scanForHistories() async throws {
        switch commands {
        case .single(let client):
            try await scan { try await client.send($0) }
        case .cluster(let cluster):
            for primary in cluster.primaries.sorted() {
                try await scan { try await cluster.send($0, toPrimary: primary) }
            }
        }
    }

    /// One node's history streams, by `SCAN` (at most 10,000 rounds of 1,000 keys).
    private func scan(_ send: (RedisCommand) async throws -> RESPValue) async throws {
        var cursor = "0"
        var rounds = 0
        repeat {
            let reply = try await send(
                RedisCommand("SCAN", .string(cursor), .string("MATCH"), .string("\(RedisKeys.prefix):{*}:history"), .string("COUNT"), .integer(1000))
            )
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { return }
            for key in parts[1].array ?? [] {
                if let name = key.string, let channel = RedisKeys.channel(ofHistory: name) { archiveQueue.add(channel) }
            }
            cursor = next
            rounds += 1
        } while cursor != "0" && rounds < 10_000
    }

    /// Takes the oldest entries of a channel not archived yet, for one archiver.
    ///
    /// KEYS: meta hash, history stream, the archiving hold, changes hash. ARGV: the
    /// archiver, how long to hold the channel (ms), how many entries. Returns `{epoch,
    /// entries, held, lost}`: no entries when the channel has no history, when another
    /// archiver holds it (`held` 1), or when everything is archived (the hold is let go).
    /// The group is made at the stream's start the first time: everything Redis still has
    /// is archived.
    ///
    /// `lost`: entries handed to an archiver that let go of them and cut from the stream
    /// since, and offsets between the last entry handed to the group and the first one
    /// read now that are neither in the stream nor deleted messages (a deleted message
    /// leaves a ghost in the changes hash): the stream was cut at `--archive-backlog`
    /// before the archive took them, or Redis lost them. Looked for in at most 10,000
    /// offsets; past that, every offset of the hole counts.
    static let archiveTakeScript = """
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then return {false, {}, 0, 0} end
        local holder = redis.call('GET', KEYS[3])
        if holder and holder ~= ARGV[1] then return {epoch, {}, 1, 0} end
        redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
        local made = redis.pcall('XGROUP', 'CREATE', KEYS[2], 'archive', '0')
        local new = type(made) == 'table' and made.ok ~= nil
        -- Whatever is pending is someone's who let go (or ours from before): first.
        local claimed = redis.call('XAUTOCLAIM', KEYS[2], 'archive', ARGV[1], 0, '0-0', 'COUNT', ARGV[3])
        local entries = claimed[2]
        -- Entries handed to an archiver that let go of them, cut from the stream since.
        local lost = claimed[3] and #claimed[3] or 0
        if #entries == 0 then
          local delivered = nil
          if not new then
            for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
              local fields = {}
              for j = 1, #group, 2 do fields[group[j]] = group[j + 1] end
              if fields['name'] == 'archive' then delivered = tonumber(string.match(fields['last-delivered-id'], '^(%d+)')) end
            end
          end
          local read = redis.call('XREADGROUP', 'GROUP', 'archive', ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
          if read then entries = read[1][2] end
          if delivered and delivered > 0 and #entries > 0 then
            local first = tonumber(string.match(entries[1][1], '^(%d+)'))
            local from, to = delivered + 1, first - 1
            if to >= from then
              lost = to - from + 1
              local checked = math.min(to, from + 9999)
              for start = from, checked, 500 do
                local offsets = {}
                for o = start, math.min(checked, start + 499) do offsets[#offsets + 1] = o end
                for _, state in ipairs(redis.call('HMGET', KEYS[4], unpack(offsets))) do
                  if state and string.find(state, '"g":', 1, true) then lost = lost - 1 end
                end
              end
            end
          end
        end
        if #entries == 0 then redis.call('DEL', KEYS[3]) end
        return {epoch, entries, 0, lost}
        """

    /// Acknowledges archived entries and cuts the stream back to the history size, never
    /// past the oldest entry still pending or after the newest acknowledged.
    ///
    /// KEYS: meta hash, history stream, the archiving hold. ARGV: the archiver, the
    /// history size, then the entries' ids.
    static let archivedScript = """
        redis.call('XACK', KEYS[2], 'archive', unpack(ARGV, 3))
        local newest = 0
        for i = 3, #ARGV do
          local offset = tonumber(string.match(ARGV[i], '^(%d+)'))
          if offset > newest then newest = offset end
        end
        local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
        local floor = math.min(last - tonumber(ARGV[2]) + 1, newest + 1)
        local pending = redis.call('XPENDING', KEYS[2], 'archive')
        if pending[1] > 0 then
          local lowest = tonumber(string.match(pending[2], '^(%d+)'))
          if lowest < floor then floor = lowest end
        end
        if floor > 1 then redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', floor) .. '-0') end
        return floor
        """
}
