/// The Lua scripts of ``RedisBroker``: each one atomic step in Redis.
extension RedisBroker {
    /// Publishes messages to one channel, in order, in one atomic step.
    ///
    /// KEYS: meta hash, history stream, changes hash, read states, moderation hash, last
    /// posts (slow mode), then the messages' idempotency keys (those that have one). ARGV: pub/sub channel, time (ms), an epoch for a channel
    /// that has none, history size, time to live in ms (0: none), the highest offset this
    /// instance has seen in the channel with its epoch (the fence: epoch, offset), whether
    /// the publish may create the channel (`1`/`0`), how long to remember an idempotency
    /// key (ms), how long after a message its author may edit it (ms); then five per
    /// message: its data, its sender's name (empty: none), the index in KEYS of its
    /// idempotency key (0: none), its sender's identity (empty: none), its kind
    /// (``MessageKind/token``; a reaction is asked for as `r<of>` and toggles) and whether
    /// a moderator or trusted integration sent it (`1`/`0`).
    ///
    /// Moderation (``RoomModeration/refusal(from:kind:exempt:lastPost:now:)``, the same
    /// rules): a room nobody moderated costs one `EXISTS` per script (none when no message
    /// of the run has a sender, who alone can be held to it). Otherwise each
    /// message with a sender is checked against their ban and mute and the room's slow
    /// mode, and a message sent in slow mode records its time in the last posts.
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
    /// A change (edit, delete, reaction) is checked against its message here, in the same
    /// step: the message must be in the history and a message (not a change), an edit or
    /// delete must come from its author, an edit within the window. It then takes its own
    /// offset like a message, and the message's state in the changes hash (a JSON object:
    /// `e` edited time, `d` newest text, `x` deleted time, `r` reactions as
    /// `[[emoji, [ids]], …]`, `s` the offsets of its edits) records what it did. A delete
    /// takes the text out of Redis: the message's entry and its edits' entries are
    /// deleted from the stream and each leaves a ghost (`g`: time, sender, name, kind),
    /// so history reads still show them, without text, at their offsets.
    ///
    /// Returns, per message, `{offset, epoch, raised from (0 when the fence was not
    /// needed), repeat (1 when the key was known: nothing published), created (1: the
    /// channel is new; -1: refused because it would have been), time, refusal status (0:
    /// none), refusal words, kind as published}`; a moderation refusal adds `retry after
    /// (s; 0: none), reason`. On a cluster, `PUBLISH` becomes
    /// `SPUBLISH`: the pub/sub channel carries the same hash tag as the keys, so it lives
    /// in their slot.
    static func publishScript(publish: String) -> String {
        """
        local count = (#ARGV - 10) / 6
        local results = {}
        local epoch = nil
        local refused = false
        local created = 0
        local raised = 0
        local published = false
        local changed = false
        local now = tonumber(ARGV[2])
        local window = tonumber(ARGV[10])
        -- The channel's last offset, read once and written once at the end: a run of
        -- messages then costs one HGET and one HSET instead of a HINCRBY each.
        local last = nil
        local counted = false
        local function lastOffset()
          if last == nil then last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') end
          return last
        end
        -- The run's idempotency keys, read with one MGET; a key set by this run is
        -- remembered here, so that a key twice in one run publishes once.
        local sent = {}
        if #KEYS > 6 then
          local found = redis.call('MGET', unpack(KEYS, 7, #KEYS))
          for j = 7, #KEYS do
            if found[j - 6] then sent[KEYS[j]] = found[j - 6] end
          end
        end
        -- Whether the room is moderated at all: asked once, at the first message with a sender.
        local moderated = nil
        -- A moderation refusal of the sender's message as {status, words, retry after,
        -- reason}, or nil and, when slow mode is to record the post, its seconds.
        local function moderation(from, kind, exempt)
          local found = redis.call('HMGET', KEYS[5], 'b:' .. from, 'm:' .. from, 'slow')
          local ban, mute, slow = tonumber(found[1]), tonumber(found[2]), tonumber(found[3] or '0')
          if ban and (ban == 0 or ban > now) then return {403, '\(RoomModeration.bannedWords)', 0, 'banned'} end
          local op = string.sub(kind, 1, 1)
          if op == 'd' then return nil end
          if mute and mute > now then
            local left = math.max(1, math.floor((mute - now + 999) / 1000))
            return {403, 'You are muted in this room for ' .. left .. ' more ' .. (left == 1 and 'second' or 'seconds') .. '.', 0, 'muted'}
          end
          if op ~= 'm' or slow <= 0 or exempt then return nil end
          local lastPost = tonumber(redis.call('HGET', KEYS[6], from) or '')
          if lastPost and lastPost + slow * 1000 > now then
            local wait = math.max(1, math.floor((lastPost + slow * 1000 - now + 999) / 1000))
            return {429, 'This room is in slow mode: one message every ' .. slow .. ' s per person. Wait ' .. wait .. ' more ' .. (wait == 1 and 'second' or 'seconds') .. '.', wait, 'slow_mode'}
          end
          return nil, slow
        end
        local function entryOf(offset)
          local found = redis.call('XRANGE', KEYS[2], offset .. '-0', offset .. '-0')[1]
          if not found then return nil end
          local fields = {}
          for j = 1, #found[2], 2 do fields[found[2][j]] = found[2][j + 1] end
          return fields
        end
        local function stateOf(offset)
          local stored = redis.call('HGET', KEYS[3], offset)
          if stored then return cjson.decode(stored) end
          return {}
        end
        -- Checks a change against its message; returns its status and words when refused,
        -- else nil and the message's state, its entry and the kind to publish.
        local function check(kind, from, exempt)
          local op = string.sub(kind, 1, 1)
          -- The offset as sent, digits only: Lua would write a large number as 1e+14.
          local of = string.sub(kind, 2)
          if tonumber(of) > lastOffset() then return 404, 'Message ' .. of .. ' is not in the history of the channel.' end
          local state = stateOf(of)
          local entry = entryOf(of)
          if not entry then
            if state.g and not state.g.k then return 403, 'Message ' .. of .. ' was deleted.' end
            if state.g then return 404, 'Offset ' .. of .. ' is a change to a message, not a message.' end
            return 404, 'Message ' .. of .. ' is not in the history of the channel.'
          end
          if entry.k then return 404, 'Offset ' .. of .. ' is a change to a message, not a message.' end
          -- A moderator may delete anyone's message.
          if op ~= 'r' and not (op == 'd' and exempt) and (from == '' or entry.f ~= from) then
            return 403, 'Only its author may ' .. (op == 'e' and 'edit' or 'delete') .. ' message ' .. of .. '.'
          end
          if op == 'e' and tonumber(entry.t) + window < now then
            return 403, 'Message ' .. of .. ' can no longer be edited: messages can be edited for ' .. math.floor(window / 1000) .. ' s after they are sent.'
          end
          return nil, state, entry, of, op
        end
        local function forget(offset)
          redis.call('XDEL', KEYS[2], offset .. '-0')
        end
        -- The run in a protected call: should a command fail part of the way (Redis does
        -- not roll back what a script did), the offsets already handed out are still
        -- written below, so the next run never reuses one; then the error goes on.
        local ran, failure = pcall(function()
          for i = 1, count do
            local base = 10 + (i - 1) * 6
            local data, name, keyIndex, from, kind = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]), ARGV[base + 4], ARGV[base + 5]
            local exempt = ARGV[base + 6] == '1'
            local offset0, epoch0, time0
            if keyIndex > 0 then
              local first = sent[KEYS[keyIndex]]
              if first then offset0, epoch0, time0 = string.match(first, '^(%d+) (%S+) (%d+)$') end
            end
            local barred, slow = nil, nil
            if not offset0 and from ~= '' then
              if moderated == nil then moderated = redis.call('EXISTS', KEYS[5]) == 1 end
              if moderated then barred, slow = moderation(from, kind, exempt) end
            end
            if offset0 then
              results[i] = {tonumber(offset0), epoch0, 0, 1, 0, tonumber(time0), 0, '', kind}
            elseif barred then
              results[i] = {0, '', 0, 0, 0, 0, barred[1], barred[2], kind, barred[3], barred[4]}
            elseif kind ~= 'm' and not redis.call('HGET', KEYS[1], 'epoch') then
              results[i] = {0, '', 0, 0, 0, 0, 404, 'The channel has no messages.', kind}
            else
              if not epoch and not refused then
                if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[3]) == 1 then
                  if ARGV[8] ~= '1' then
                    redis.call('DEL', KEYS[1])
                    refused = true
                  else
                    created = 1
                    -- A new epoch: whatever is left from an older one is not part of it.
                    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
                  end
                end
                if not refused then
                  epoch = redis.call('HGET', KEYS[1], 'epoch')
                  if ARGV[7] ~= '0' and ARGV[6] == epoch then
                    local current = lastOffset()
                    if current < tonumber(ARGV[7]) then
                      last = tonumber(ARGV[7])
                      counted = true
                      raised = current
                    end
                  end
                end
              end
              local status, state, entry, of, op = 0, nil, nil, nil, nil
              if not refused and kind ~= 'm' then
                status, state, entry, of, op = check(kind, from, exempt)
                if status == nil then
                  status = 0
                  if op == 'r' then
                    local on = true
                    local reactions = state.r or {}
                    local reactors = 0
                    for _, reaction in ipairs(reactions) do reactors = reactors + #reaction[2] end
                    local place = nil
                    for j, reaction in ipairs(reactions) do
                      if reaction[1] == data then place = j end
                    end
                    if place then
                      local people = reactions[place][2]
                      local mine = nil
                      for j, id in ipairs(people) do
                        if id == from then mine = j end
                      end
                      if mine then
                        table.remove(people, mine)
                        on = false
                        if #people == 0 then table.remove(reactions, place) end
                      elseif reactors >= \(MessageState.maximumReactors) then
                        status, state = 400, 'Message ' .. of .. ' has ' .. reactors .. ' reactions already, the most one message holds.'
                      else
                        people[#people + 1] = from
                      end
                    elseif #reactions >= \(MessageState.maximumReactions) then
                      status, state = 400, 'Message ' .. of .. ' has ' .. #reactions .. ' different reactions already, the most one message holds.'
                    elseif reactors >= \(MessageState.maximumReactors) then
                      status, state = 400, 'Message ' .. of .. ' has ' .. reactors .. ' reactions already, the most one message holds.'
                    else
                      reactions[#reactions + 1] = {data, {from}}
                    end
                    if status == 0 then
                      if #reactions > 0 then state.r = reactions else state.r = nil end
                      if not on then kind = 'u' .. of end
                    end
                  end
                end
              end
              if refused then
                results[i] = {0, '', 0, 0, -1, 0, 0, '', kind}
              elseif status ~= 0 then
                results[i] = {0, '', 0, 0, 0, 0, status, state, kind}
              else
                last = lastOffset() + 1
                counted = true
                local offset = last
                local header = 'v2 ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2] .. ' ' .. (from ~= '' and from or '-') .. ' ' .. kind
                local fields = {'t', ARGV[2], 'd', data}
                if name ~= '' then
                  fields[#fields + 1] = 'n'
                  fields[#fields + 1] = name
                  header = header .. ' ' .. name
                end
                if from ~= '' then
                  fields[#fields + 1] = 'f'
                  fields[#fields + 1] = from
                end
                if kind ~= 'm' then
                  fields[#fields + 1] = 'k'
                  fields[#fields + 1] = kind
                end
                redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], offset .. '-0', unpack(fields))
                if op == 'e' then
                  state.e = now
                  state.d = data
                  state.s = state.s or {}
                  state.s[#state.s + 1] = offset
                elseif op == 'd' then
                  state.x = now
                  state.e = nil
                  state.d = nil
                  state.r = nil
                  state.g = {t = tonumber(entry.t), f = entry.f, n = entry.n}
                  forget(of)
                  for _, edit in ipairs(state.s or {}) do
                    local gone = entryOf(edit)
                    if gone then
                      forget(edit)
                      redis.call('HSET', KEYS[3], edit, cjson.encode({g = {t = tonumber(gone.t), f = gone.f, k = gone.k}}))
                    end
                  end
                  state.s = nil
                end
                if op then
                  redis.call('HSET', KEYS[3], of, cjson.encode(state))
                  changed = true
                end
                if keyIndex > 0 then
                  local first = offset .. ' ' .. epoch .. ' ' .. ARGV[2]
                  redis.call('SET', KEYS[keyIndex], first, 'PX', ARGV[9])
                  sent[KEYS[keyIndex]] = first
                end
                if slow then
                  redis.call('HSET', KEYS[6], from, ARGV[2])
                  redis.call('PEXPIRE', KEYS[6], slow * 1000)
                end
                redis.call('\(publish)', ARGV[1], header .. '\\n' .. data)
                results[i] = {offset, epoch, raised, 0, created, now, 0, '', kind}
                raised = 0
                created = 0
                published = true
              end
            end
          end
          if changed then
            -- A channel's history spans at most four history lengths of offsets: deletes
            -- take entries out of the stream (so MAXLEN alone would let ghosts pile up),
            -- and a state is kept only while its offset is in that span. Past five
            -- lengths of states, both are cut back to four: at most one scan of the hash
            -- per history length of changes.
            local size = tonumber(ARGV[4])
            if redis.call('HLEN', KEYS[3]) > 5 * size then
              local floor = lastOffset() - 4 * size
              for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
                if tonumber(field) < floor then redis.call('HDEL', KEYS[3], field) end
              end
              if floor > 0 then redis.call('XTRIM', KEYS[2], 'MINID', floor .. '-0') end
            end
          end
        end)
        if counted then
          -- As digits: Lua would write a large number as 1e+14.
          redis.call('HSET', KEYS[1], 'offset', string.format('%d', last))
        end
        if not ran then error(failure) end
        if published and ARGV[5] ~= '0' then
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
          redis.call('PEXPIRE', KEYS[2], ARGV[5])
          -- The changes and read states live as long as the channel (PEXPIRE on a key that
          -- does not exist does nothing).
          redis.call('PEXPIRE', KEYS[3], ARGV[5])
          redis.call('PEXPIRE', KEYS[4], ARGV[5])
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
    /// KEYS: meta hash, history stream, changes hash. ARGV: first stream ID to read
    /// (empty: the newest entries), how many. Returns `{epoch, last offset, oldest entry,
    /// entries}` when no message of the channel was ever changed (the common case, one
    /// check more than before). Otherwise `{epoch, last offset, oldest entry, items,
    /// "changes"}`, each item `{id, fields or false, state or false}` in offset order,
    /// with the states of the offsets read (deleted messages and edits, no longer in the
    /// stream, as items without fields). A state is `{edited, deleted, text or false,
    /// {emoji, {ids}, …}, ghost or false}`, a ghost `{time, from, name, kind}` (`false`
    /// where absent).
    static let historyScript = """
        local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
        local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
        local count = tonumber(ARGV[2])
        local entries
        if ARGV[1] == '' then
          entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
        else
          entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', count)
        end
        if redis.call('EXISTS', KEYS[3]) == 0 then
          return {meta[1], meta[2], oldest, entries}
        end
        local function offsetOf(id) return tonumber(string.match(id, '^(%d+)')) end
        local last = tonumber(meta[2] or '0')
        local first = oldest[1] and offsetOf(oldest[1][1]) or (last + 1)
        -- Deleted messages just below the oldest entry are still part of the history
        -- (their entries are gone, their ghosts are not): the history starts at the
        -- lowest of an unbroken run of them.
        local floor = first
        while floor > 1 and first - floor < 1000 do
          local below = {}
          for o = floor - 1, math.max(1, floor - 100), -1 do below[#below + 1] = o end
          local states = redis.call('HMGET', KEYS[3], unpack(below))
          local broken = false
          for j, o in ipairs(below) do
            if states[j] and string.find(states[j], '"g":', 1, true) then
              floor = o
            else
              broken = true
              break
            end
          end
          if broken then break end
        end
        if floor > last then return {meta[1], meta[2], oldest, entries} end
        if floor < first then
          first = floor
          oldest = {{floor .. '-0', {}}}
        end
        local byOffset = {}
        for _, entry in ipairs(entries) do byOffset[offsetOf(entry[1])] = entry end
        -- The range the entries read stand for, where ghosts may lie between them. It is
        -- bounded (a page with many ghosts is shorter, a read never unbounded), and a
        -- page never reaches past it: what lies beyond comes with the next page.
        local span = 4 * count + 100
        local lowest, highest
        for o, _ in pairs(byOffset) do
          if not lowest or o < lowest then lowest = o end
          if not highest or o > highest then highest = o end
        end
        local lo, hi
        if ARGV[1] == '' then
          hi = last
          lo = (#entries == count) and lowest or first
          if hi - lo > span then
            lo = hi - span
            -- A hole of offsets never handed out (Redis lost writes and the counter was
            -- raised past them) between the entries and the last offset: no ghost lies
            -- in it, so the span starts again at the newest entry.
            if highest and highest < lo then
              hi = highest
              lo = math.max(hi - span, (#entries == count) and lowest or first)
            end
          end
        else
          lo = math.max(offsetOf(ARGV[1]), first)
          hi = (#entries == count) and highest or last
          if hi - lo > span then
            hi = lo + span
            -- The same hole before the entries: the span starts again at the oldest.
            if lowest and lowest > hi then
              lo = lowest
              hi = math.min(lo + span, (#entries == count) and highest or last)
            end
          end
        end
        -- Offsets to look at: the range; a newest page keeps every entry read, and looks
        -- for ghosts only in the range.
        local offsets = {}
        for o = lo, hi do offsets[#offsets + 1] = o end
        if ARGV[1] == '' then
          for o, _ in pairs(byOffset) do
            if o < lo then offsets[#offsets + 1] = o end
          end
        end
        table.sort(offsets)
        local items = {}
        for first = 1, #offsets, 500 do
          local fields = {}
          for j = first, math.min(#offsets, first + 499) do fields[#fields + 1] = offsets[j] end
          local states = redis.call('HMGET', KEYS[3], unpack(fields))
          for j, o in ipairs(fields) do
            local state = false
            if states[j] then
              local s = cjson.decode(states[j])
              local reactions = {}
              for _, reaction in ipairs(s.r or {}) do
                reactions[#reactions + 1] = reaction[1]
                reactions[#reactions + 1] = reaction[2]
              end
              local ghost = false
              if s.g then ghost = {s.g.t or 0, s.g.f or false, s.g.n or false, s.g.k or false} end
              state = {s.e or 0, s.x or 0, s.d or false, reactions, ghost}
            end
            local entry = byOffset[o]
            if entry then
              items[#items + 1] = {entry[1], entry[2], state}
            elseif state and state[5] then
              items[#items + 1] = {o .. '-0', false, state}
            end
          end
        end
        if ARGV[1] == '' then
          while #items > count do table.remove(items, 1) end
        else
          while #items > count do table.remove(items) end
        end
        return {meta[1], meta[2], oldest, items, 'changes'}
        """

    /// How far an identity has read a channel, moved only forward, and the signal that
    /// tells the channel's instances when it moved.
    ///
    /// KEYS: meta hash, reads hash. ARGV: identity, offset (0: only read it), time to
    /// live (ms; 0: none), pub/sub channel, the identity's name (empty: none). The offset
    /// is held to the channel's last one. Returns the offset stored now.
    static func readScript(publish: String) -> String {
        """
        local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
        local wanted = tonumber(ARGV[2])
        if wanted <= stored then return stored end
        local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
        if wanted > last then wanted = last end
        if wanted <= stored then return stored end
        redis.call('HSET', KEYS[2], ARGV[1], wanted)
        if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
        local signal = 's1 r ' .. wanted .. ' ' .. ARGV[1]
        if ARGV[5] ~= '' then signal = signal .. ' ' .. ARGV[5] end
        redis.call('\(publish)', ARGV[4], signal)
        return wanted
        """
    }

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

    /// A moderation action, atomically, and the signal that tells every instance.
    ///
    /// KEYS: moderation hash, last posts. ARGV: time (Unix ms), what (`m` mute, `b` ban,
    /// `u` unban, `s` slow mode, `S` slow mode unless the room has its own), identity
    /// (empty for slow mode), seconds, pub/sub channel. Fields whose time ended are dropped
    /// here; the hash then expires with its latest deadline, or persists while a ban
    /// without end or a slow-mode setting (0, off, included) holds. Returns `{changed (1/0), until (ms; 0: none or no
    /// end), field, value, …}`: the room after it.
    static func moderateScript(publish: String) -> String {
        """
        local now = tonumber(ARGV[1])
        local what, user, seconds = ARGV[2], ARGV[3], tonumber(ARGV[4])
        local changed, till, signal = 1, 0, nil
        -- A new mute or ban in a room that holds as many as it may: refused (-1).
        if (what == 'm' and seconds > 0) or what == 'b' then
          local field = what .. ':' .. user
          if redis.call('HEXISTS', KEYS[1], field) == 0 and redis.call('HLEN', KEYS[1]) >= \(RoomModeration.maximumEntries) then
            return {-1, 0}
          end
        end
        if what == 'm' then
          if seconds > 0 then
            till = now + seconds * 1000
            redis.call('HSET', KEYS[1], 'm:' .. user, till)
          else
            redis.call('HDEL', KEYS[1], 'm:' .. user)
          end
          signal = 's1 m ' .. user .. ' ' .. till
        elseif what == 'b' then
          if seconds > 0 then till = now + seconds * 1000 end
          redis.call('HSET', KEYS[1], 'b:' .. user, till)
          signal = 's1 b ' .. user .. ' ' .. till
        elseif what == 'u' then
          redis.call('HDEL', KEYS[1], 'b:' .. user)
          signal = 's1 u ' .. user
        elseif what == 'S' and (seconds <= 0 or redis.call('HSETNX', KEYS[1], 'slow', seconds) == 0) then
          changed = 0
        elseif what == 's' and seconds <= 0 and redis.call('EXISTS', KEYS[1]) == 0 then
          -- Off in a room nobody moderated: nothing to keep (no key made for it).
          signal = 's1 s 0'
        else
          -- Off is kept as 0: --slow-mode at start leaves a room a moderator set alone.
          redis.call('HSET', KEYS[1], 'slow', math.max(0, seconds))
          if seconds <= 0 then
            redis.call('DEL', KEYS[2])
          elseif redis.call('EXISTS', KEYS[2]) == 1 then
            -- Who posted when is kept as long as the interval: a longer one keeps it longer.
            redis.call('PEXPIRE', KEYS[2], seconds * 1000)
          end
          signal = 's1 s ' .. seconds
        end
        local latest, forever = 0, false
        local room = {}
        local fields = redis.call('HGETALL', KEYS[1])
        for i = 1, #fields, 2 do
          local field, value = fields[i], tonumber(fields[i + 1])
          if field == 'slow' then
            forever = true
            room[#room + 1] = field
            room[#room + 1] = value
          elseif value == 0 and string.sub(field, 1, 2) == 'b:' then
            forever = true
            room[#room + 1] = field
            room[#room + 1] = value
          elseif value <= now then
            redis.call('HDEL', KEYS[1], field)
          else
            if value > latest then latest = value end
            room[#room + 1] = field
            room[#room + 1] = value
          end
        end
        if forever then
          redis.call('PERSIST', KEYS[1])
        elseif latest > 0 then
          redis.call('PEXPIRE', KEYS[1], latest - now)
        end
        if signal then redis.call('\(publish)', ARGV[5], signal) end
        local answer = {changed, till}
        for _, item in ipairs(room) do answer[#answer + 1] = item end
        return answer
        """
    }

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
