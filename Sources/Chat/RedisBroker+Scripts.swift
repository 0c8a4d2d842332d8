/// The Lua scripts of ``RedisBroker``: each one atomic step in Redis.
extension RedisBroker {
    /// Publishes one message.
    ///
    /// KEYS: meta hash, history stream, and the publish's idempotency key if it has one.
    /// ARGV: pub/sub channel, data, time (ms), an epoch for a channel that has none,
    /// history size, time to live in ms (0: none), the sender's name (empty: none), the
    /// highest offset this instance has seen in the channel with its epoch (the fence),
    /// whether the publish may create the channel (`1`/`0`), and how long to remember
    /// the idempotency key (ms).
    ///
    /// The fence: Redis may lose its last writes (a crash failover, asynchronous
    /// replication; a crash with `appendfsync everysec`). The counter would then hand
    /// those offsets out again, and instances that delivered the lost messages would
    /// take the new ones for duplicates. So the counter never goes below what the
    /// publishing instance has seen in the same epoch; the lost offsets stay a hole
    /// (readers who missed them get a `gap`).
    ///
    /// The idempotency key is looked up and stored in the same atomic step, so two
    /// instances racing on one key publish once.
    ///
    /// Returns `{offset, epoch, raised from (0 when the fence was not needed), repeat (1
    /// when the key was known: nothing published), created (1: the channel is new; -1:
    /// refused because it would have been), time}`. On a cluster, `PUBLISH` becomes
    /// `SPUBLISH`: the pub/sub channel carries the same hash tag as the keys, so it lives
    /// in their slot.
    static func publishScript(publish: String) -> String {
        """
        if KEYS[3] then
          local first = redis.call('GET', KEYS[3])
          if first then
            local offset, epoch, time = string.match(first, '^(%d+) (%S+) (%d+)$')
            if offset then return {tonumber(offset), epoch, 0, 1, 0, tonumber(time)} end
          end
        end
        local created = 0
        if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4]) == 1 then
          if ARGV[10] ~= '1' then
            redis.call('DEL', KEYS[1])
            return {0, '', 0, 0, -1, 0}
          end
          created = 1
          -- A new epoch: whatever history is left from an older one is not part of it.
          redis.call('DEL', KEYS[2])
        end
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        local raised = 0
        if ARGV[9] ~= '0' and ARGV[8] == epoch then
          local current = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
          if current < tonumber(ARGV[9]) then
            redis.call('HSET', KEYS[1], 'offset', ARGV[9])
            raised = current
          end
        end
        local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
        local header = 'v1 ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[3]
        if ARGV[7] ~= '' then
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], offset .. '-0', 't', ARGV[3], 'd', ARGV[2], 'n', ARGV[7])
          header = header .. ' ' .. ARGV[7]
        else
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], offset .. '-0', 't', ARGV[3], 'd', ARGV[2])
        end
        if ARGV[6] ~= '0' then
          redis.call('PEXPIRE', KEYS[1], ARGV[6])
          redis.call('PEXPIRE', KEYS[2], ARGV[6])
        end
        if KEYS[3] then
          redis.call('SET', KEYS[3], offset .. ' ' .. epoch .. ' ' .. ARGV[3], 'PX', ARGV[11])
        end
        redis.call('\(publish)', ARGV[1], header .. '\\n' .. ARGV[2])
        return {offset, epoch, raised, 0, created, tonumber(ARGV[3])}
        """
    }

    /// The publish script of one Redis.
    static let publishScript = publishScript(publish: "PUBLISH")
    /// The publish script of a cluster: sharded pub/sub.
    static let shardedPublishScript = publishScript(publish: "SPUBLISH")

    /// Reads history in one consistent step.
    ///
    /// KEYS: meta hash, history stream. ARGV: first stream ID to read (empty: the newest
    /// entries), how many. Returns `{epoch, last offset, oldest entry, entries}`.
    static let historyScript = """
        local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
        local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
        local entries
        if ARGV[1] == '' then
          entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
        else
          entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
        end
        return {meta[1], meta[2], oldest, entries}
        """

    /// A room's leases and who is in it. KEYS: leases, names. ARGV: instance, lifetime
    /// (ms), grace (ms), list limit, how many people are refreshed, then (id, name) per
    /// refreshed person, then the ids leaving this instance. Uses Redis' clock, so
    /// instances with skewed clocks agree. Returns `{online, id, name, id, name, …}`
    /// (only `{online}` past the list limit; `{-1}` for a limit below 0: renew only).
    static let presenceScript = """
        local now = redis.call('TIME')
        local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        local instance = ARGV[1]
        local lifetime = tonumber(ARGV[2])
        local grace = tonumber(ARGV[3])
        local limit = tonumber(ARGV[4])
        local count = tonumber(ARGV[5])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
        local batch = {}
        for i = 0, count - 1 do
          local id = ARGV[6 + 2 * i]
          local name = ARGV[7 + 2 * i]
          batch[#batch + 1] = ms + lifetime
          batch[#batch + 1] = instance .. '|' .. id
          if name ~= '' then redis.call('HSET', KEYS[2], id, name) else redis.call('HDEL', KEYS[2], id) end
          if #batch >= 1000 then
            redis.call('ZADD', KEYS[1], unpack(batch))
            batch = {}
          end
        end
        if #batch > 0 then redis.call('ZADD', KEYS[1], unpack(batch)) end
        for i = 6 + 2 * count, #ARGV do
          redis.call('ZADD', KEYS[1], 'XX', ms + grace, instance .. '|' .. ARGV[i])
        end
        if count > 0 then
          redis.call('PEXPIRE', KEYS[1], lifetime * 2)
          redis.call('PEXPIRE', KEYS[2], lifetime * 2)
        end
        if limit < 0 then return {-1} end
        local seen = {}
        local ids = {}
        for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local id = string.match(lease, '|(.*)$')
          if id and not seen[id] then
            seen[id] = true
            ids[#ids + 1] = id
          end
        end
        if #ids > limit then return {#ids} end
        local out = {#ids}
        if #ids > 0 then
          local names = redis.call('HMGET', KEYS[2], unpack(ids))
          for i, id in ipairs(ids) do
            out[#out + 1] = id
            out[#out + 1] = names[i] or ''
          end
        end
        return out
        """

    /// Raises a channel's counter to an offset already delivered, after Redis lost writes.
    /// KEYS: meta hash. ARGV: epoch, offset. Returns the counter before (or -1 if the
    /// epoch is another, or nothing needed raising).
    static let fenceScript = """
        if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return -1 end
        local current = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
        if current >= tonumber(ARGV[2]) then return -1 end
        redis.call('HSET', KEYS[1], 'offset', ARGV[2])
        return current
        """

    /// A place in a capped room, atomically. KEYS: leases. ARGV: instance, id, cap,
    /// lifetime (ms). Returns 1 when admitted (already there, or room left), 0 when full.
    static let admitScript = """
        local now = redis.call('TIME')
        local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
        local mine = ARGV[1] .. '|' .. ARGV[2]
        local seen = {}
        local people = 0
        for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local id = string.match(lease, '|(.*)$')
          if id == ARGV[2] then
            redis.call('ZADD', KEYS[1], 'GT', ms + tonumber(ARGV[4]), mine)
            return 1
          end
          if id and not seen[id] then
            seen[id] = true
            people = people + 1
          end
        end
        if people >= tonumber(ARGV[3]) then return 0 end
        redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[4]), mine)
        redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
        return 1
        """
}
