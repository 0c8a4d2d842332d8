/// The Lua scripts of ``RedisBroker``: each one atomic step in Redis.
extension RedisBroker {
    /// Publishes messages to one channel, in order, in one atomic step.
    ///
    /// KEYS: meta hash, history stream, then the messages' idempotency keys (those that
    /// have one). ARGV: pub/sub channel, time (ms), an epoch for a channel that has none,
    /// history size, time to live in ms (0: none), the highest offset this instance has
    /// seen in the channel with its epoch (the fence: epoch, offset), whether the publish
    /// may create the channel (`1`/`0`), how long to remember an idempotency key (ms);
    /// then three per message: its data, its sender's name (empty: none), and the index
    /// in KEYS of its idempotency key (0: none).
    ///
    /// The fence: Redis may lose its last writes (a crash failover, asynchronous
    /// replication; a crash with `appendfsync everysec`). The counter would then hand
    /// those offsets out again, and instances that delivered the lost messages would
    /// take the new ones for duplicates. So the counter never goes below what the
    /// publishing instance has seen in the same epoch; the lost offsets stay a hole
    /// (readers who missed them get a `gap`).
    ///
    /// An idempotency key is looked up and stored in the same atomic step, so two
    /// instances racing on one key publish once (and two messages of one batch with the
    /// same key, once).
    ///
    /// Returns, per message, `{offset, epoch, raised from (0 when the fence was not
    /// needed), repeat (1 when the key was known: nothing published), created (1: the
    /// channel is new; -1: refused because it would have been), time}`. On a cluster,
    /// `PUBLISH` becomes `SPUBLISH`: the pub/sub channel carries the same hash tag as the
    /// keys, so it lives in their slot.
    static func publishScript(publish: String) -> String {
        """
        local count = (#ARGV - 9) / 3
        local results = {}
        local epoch = nil
        local refused = false
        local created = 0
        local raised = 0
        local published = false
        for i = 1, count do
          local base = 9 + (i - 1) * 3
          local data, name, keyIndex = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
          local offset0, epoch0, time0
          if keyIndex > 0 then
            local first = redis.call('GET', KEYS[keyIndex])
            if first then offset0, epoch0, time0 = string.match(first, '^(%d+) (%S+) (%d+)$') end
          end
          if offset0 then
            results[i] = {tonumber(offset0), epoch0, 0, 1, 0, tonumber(time0)}
          else
            if not epoch and not refused then
              if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[3]) == 1 then
                if ARGV[8] ~= '1' then
                  redis.call('DEL', KEYS[1])
                  refused = true
                else
                  created = 1
                  -- A new epoch: whatever history is left from an older one is not part of it.
                  redis.call('DEL', KEYS[2])
                end
              end
              if not refused then
                epoch = redis.call('HGET', KEYS[1], 'epoch')
                if ARGV[7] ~= '0' and ARGV[6] == epoch then
                  local current = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
                  if current < tonumber(ARGV[7]) then
                    redis.call('HSET', KEYS[1], 'offset', ARGV[7])
                    raised = current
                  end
                end
              end
            end
            if refused then
              results[i] = {0, '', 0, 0, -1, 0}
            else
              local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
              local header = 'v1 ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2]
              if name ~= '' then
                redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], offset .. '-0', 't', ARGV[2], 'd', data, 'n', name)
                header = header .. ' ' .. name
              else
                redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], offset .. '-0', 't', ARGV[2], 'd', data)
              end
              if keyIndex > 0 then
                redis.call('SET', KEYS[keyIndex], offset .. ' ' .. epoch .. ' ' .. ARGV[2], 'PX', ARGV[9])
              end
              redis.call('\(publish)', ARGV[1], header .. '\\n' .. data)
              results[i] = {offset, epoch, raised, 0, created, tonumber(ARGV[2])}
              raised = 0
              created = 0
              published = true
            end
          end
        end
        if published and ARGV[5] ~= '0' then
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
          redis.call('PEXPIRE', KEYS[2], ARGV[5])
        end
        return results
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
        -- Leases, names to set and names to drop, each in commands of up to 500 people
        -- rather than one command per person.
        local batch, named, nameless = {}, {}, {}
        local function flush()
          if #batch > 0 then redis.call('ZADD', KEYS[1], unpack(batch)) end
          if #named > 0 then redis.call('HSET', KEYS[2], unpack(named)) end
          if #nameless > 0 then redis.call('HDEL', KEYS[2], unpack(nameless)) end
          batch, named, nameless = {}, {}, {}
        end
        for i = 0, count - 1 do
          local id = ARGV[6 + 2 * i]
          local name = ARGV[7 + 2 * i]
          batch[#batch + 1] = ms + lifetime
          batch[#batch + 1] = instance .. '|' .. id
          if name ~= '' then
            named[#named + 1] = id
            named[#named + 1] = name
          else
            nameless[#nameless + 1] = id
          end
          if #batch >= 1000 then flush() end
        end
        flush()
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
