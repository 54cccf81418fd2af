import RedisClient

/// The Lua scripts of the Redis data model (DESIGN.md "Redis data model").
/// Every script touches the keys of one channel only (one hash tag, one Cluster slot).
enum RedisBrokerScripts {
    /// The epoch of a channel whose meta hash does not exist: the one its first publication will get
    /// (reads store nothing, so it is derived, as `StreamEpoch` does in the memory broker): a hash of
    /// this Redis process's run id, the meta key, the current period of the meta TTL (`period` s) and
    /// how many lives the channel had (its `lives` key, written by births only, outliving the meta).
    /// A restarted Redis (data lost) gives new epochs; so do keys deleted under a running Redis (DEL,
    /// eviction of the stream and meta), since the lives count moved on; two lives are otherwise a
    /// meta TTL apart. Only FLUSHDB within one period (which also clears the lives) repeats an epoch.
    private static let unbornEpoch = """
        local function unborn_epoch(meta, period, lives)
          local now = redis.call('TIME')
          local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
          local n = math.floor(tonumber(now[1]) / tonumber(period))
          local seed = run .. ' ' .. meta .. ' ' .. n
          if lives ~= '0' then seed = seed .. ' ' .. lives end
          return string.sub(redis.sha1hex(seed), 1, 8)
        end
        """

    /// KEYS: stream, meta, lives, then the idempotency key when there is one (no empty key, which a
    /// Redis Cluster would place in slot 0 and refuse beside the others).
    /// ARGV: pub/sub channel, history size, history TTL (s), meta key TTL (s), epoch period (the meta TTL, s),
    /// idempotency TTL (s), data, info, time (ns), and the publishing command (`SPUBLISH` on a Redis
    /// Cluster, where the pub/sub channel is a shard channel in the keys' slot; `PUBLISH` when absent).
    /// Returns {offset, epoch, duplicate}.
    ///
    /// The stream is trimmed approximately (`MAXLEN ~`: whole stream nodes, about 2.5 µs less Redis CPU per
    /// publication than an exact trim, which rewrites the head node every time); the history size is kept in
    /// the meta hash (`s`) so that reads return only the newest `size` offsets, as an exact trim would.
    /// The lives count is written at births only: two births of one period are at most one period apart,
    /// so its TTL of two periods keeps every count of a period distinct (see `unbornEpoch`).
    static let publish = RedisScript(
        unbornEpoch + "\n" + """
        local stream, meta, lives, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4] or ''
        if idem ~= '' then
          local previous = redis.call('GET', idem)
          if previous then
            local space = string.find(previous, ' ')
            return {tonumber(string.sub(previous, 1, space - 1)), string.sub(previous, space + 1), 1}
          end
        end
        local size = ARGV[2]
        local offset = 0
        local epoch = ''
        if size ~= '0' then
          local stored = redis.call('HMGET', meta, 'e', 's')
          epoch = stored[1]
          if not epoch then
            local count = redis.call('GET', lives) or '0'
            epoch = unborn_epoch(meta, ARGV[5], count)
            redis.call('HSET', meta, 'e', epoch, 's', size)
            redis.call('SET', lives, tonumber(count) + 1, 'EX', 2 * tonumber(ARGV[4]))
          elseif stored[2] ~= size then
            redis.call('HSET', meta, 's', size)
          end
          offset = redis.call('HINCRBY', meta, 't', 1)
          if offset == 1 then redis.call('DEL', stream) end
          redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'd', ARGV[7], 'i', ARGV[8])
          redis.call('EXPIRE', stream, ARGV[3])
          redis.call('EXPIRE', meta, ARGV[4])
        end
        redis.call(ARGV[10] or 'PUBLISH', ARGV[1], 'p' .. offset .. ' ' .. epoch .. ' ' .. ARGV[9] .. ' ' .. string.len(ARGV[8]) .. ' ' .. ARGV[8] .. ARGV[7])
        if idem ~= '' then
          redis.call('SET', idem, offset .. ' ' .. epoch, 'EX', ARGV[6])
        end
        return {offset, epoch, 0}
        """
    )

    /// KEYS: meta. ARGV: the epoch to leave. When the channel is still in it, a new epoch (a hash of
    /// the old one, this Redis's run id and the time) replaces it; offsets go on from the top.
    /// Returns the channel's epoch after the call (nil when it has no meta).
    static let renewEpoch = RedisScript(
        """
        local current = redis.call('HGET', KEYS[1], 'e')
        if current ~= ARGV[1] then return current end
        local now = redis.call('TIME')
        local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
        local epoch = string.sub(redis.sha1hex(current .. ' ' .. run .. ' ' .. now[1] .. ' ' .. now[2]), 1, 8)
        redis.call('HSET', KEYS[1], 'e', epoch)
        return epoch
        """
    )

    /// KEYS: stream, meta, lives. ARGV: epoch period (the meta TTL, s), first id ("-" or "N-0"), count (-1 all, 0 none),
    /// reverse ("1"/"0"). Returns {epoch, top, entries}. Writes nothing: an unknown channel stays unknown.
    static let history = RedisScript(
        unbornEpoch + "\n" + """
        -- What a stream entry counts against a byte bound: its data ('d') and an envelope.
        local function entry_size(entry, envelope)
          local fields = entry[2]
          local size = envelope
          for j = 1, #fields - 1, 2 do
            if fields[j] == 'd' then size = size + #fields[j + 1] end
          end
          return size
        end
        local stream, meta = KEYS[1], KEYS[2]
        local epoch = redis.call('HGET', meta, 'e')
        if not epoch then
          return {unborn_epoch(meta, ARGV[1], redis.call('GET', KEYS[3]) or '0'), 0, {}}
        end
        local stored = redis.call('HMGET', meta, 't', 's')
        local top = tonumber(stored[1] or '0') or 0
        -- Counts go to Redis as given (a Lua number past 2^53 would print as 9.2e+18, which Redis refuses).
        local count = tonumber(ARGV[3])
        local entries = {}
        if count ~= 0 then
          -- The stream is trimmed approximately: nothing older than the newest `size` offsets is history.
          -- (Lua prints integers exactly below 1e14; past that, which no channel reaches, reads are not clamped.)
          local size = tonumber(stored[2] or '0') or 0
          if size > 0 and top > size and top < 1e14 then
            local oldest = top - size + 1
            local first = ARGV[2] == '-' and 0 or tonumber(string.sub(ARGV[2], 1, -3))
            if first < oldest then ARGV[2] = oldest .. '-0' end
          end
          -- A byte bound (ARGV[5], -1: none): entries are read in chunks, oldest first (newest first
          -- for a reverse read), and kept while their data and an envelope each (ARGV[6]) fit; past it
          -- the read stops (a fourth element says so), so a large history is not read whole to be cut.
          local budget = tonumber(ARGV[5] or '-1') or -1
          local reverse = ARGV[4] == '1'
          if budget >= 0 and (not reverse or top < 1e14) then
            local envelope = tonumber(ARGV[6] or '0') or 0
            local total = 0
            local low, high = ARGV[2], '+'
            while true do
              local want = 32
              if count > 0 then want = math.min(want, count - #entries) end
              if want <= 0 then break end
              local chunk
              if reverse then
                chunk = redis.call('XREVRANGE', stream, high, low, 'COUNT', want)
              else
                chunk = redis.call('XRANGE', stream, low, '+', 'COUNT', want)
              end
              for _, entry in ipairs(chunk) do
                total = total + entry_size(entry, envelope)
                if total > budget then return {epoch, top, entries, 1} end
                entries[#entries + 1] = entry
              end
              if #chunk < want then break end
              -- The next chunk goes past the last entry. Ids are `<offset>-0`: forward, `<offset>-1`
              -- is the first id after it (an exclusive `(id` start needs Redis 6.2); backward, the
              -- next chunk ends at `<offset - 1>-0` (offsets below 1e14 print exactly).
              local last = chunk[#chunk][1]
              if reverse then
                local offset = tonumber(string.sub(last, 1, -3)) or 0
                if offset <= 1 then break end
                high = string.format('%d-0', offset - 1)
              else
                low = string.sub(last, 1, -2) .. '1'
              end
            end
          elseif ARGV[4] == '1' then
            if count > 0 then
              entries = redis.call('XREVRANGE', stream, '+', ARGV[2], 'COUNT', ARGV[3])
            else
              entries = redis.call('XREVRANGE', stream, '+', ARGV[2])
            end
            -- A bound on a reverse read: the newest that fit.
            if budget >= 0 then
              local envelope = tonumber(ARGV[6] or '0') or 0
              local total = 0
              for i, entry in ipairs(entries) do
                total = total + entry_size(entry, envelope)
                if total > budget then
                  local kept = {}
                  for k = 1, i - 1 do kept[k] = entries[k] end
                  return {epoch, top, kept, 1}
                end
              end
            end
          else
            if count > 0 then
              entries = redis.call('XRANGE', stream, ARGV[2], '+', 'COUNT', ARGV[3])
            else
              entries = redis.call('XRANGE', stream, ARGV[2], '+')
            end
          end
        end
        return {epoch, top, entries}
        """
    )

    /// KEYS: presence hash, presence zset. ARGV: now (s). Drops expired entries, returns HGETALL.
    static let presence = RedisScript(
        """
        local hash, zset = KEYS[1], KEYS[2]
        local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[1])
        for _, client in ipairs(expired) do redis.call('HDEL', hash, client) end
        redis.call('ZREMRANGEBYSCORE', zset, '-inf', ARGV[1])
        return redis.call('HGETALL', hash)
        """
    )

    /// KEYS: presence hash, presence zset. ARGV: expiry (s since 1970), key TTL (s), now (s), most entries
    /// per channel, then client and info JSON for each client. Expired entries go first; past the cap,
    /// clients already present are refreshed and new ones are not added.
    static let addPresence = RedisScript(
        """
        local hash, zset = KEYS[1], KEYS[2]
        local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[3])
        for _, client in ipairs(expired) do redis.call('HDEL', hash, client) end
        redis.call('ZREMRANGEBYSCORE', zset, '-inf', ARGV[3])
        local cap = tonumber(ARGV[4])
        local count = redis.call('HLEN', hash)
        for i = 5, #ARGV, 2 do
          if count < cap or redis.call('HEXISTS', hash, ARGV[i]) == 1 then
            count = count + redis.call('HSET', hash, ARGV[i], ARGV[i + 1])
            redis.call('ZADD', zset, ARGV[1], ARGV[i])
          end
        end
        redis.call('EXPIRE', hash, ARGV[2])
        redis.call('EXPIRE', zset, ARGV[2])
        return 1
        """
    )

    /// KEYS: the user's connection hash (`sb:u:{user}`: field = connection id, value = the id of
    /// the node holding it). ARGV: limit, the connection, this node's id, key TTL (s), authoritative
    /// ("1": the live ids were read just now), then the ids of the live nodes.
    /// When a connection's node is not listed: with an authoritative list it is dropped; otherwise
    /// the script changes nothing and returns -1 (the caller reads the registry and runs again).
    /// Else counts the live connections; a connection counted already answers 1; below the limit
    /// the connection is counted and 1 returned, else 0 and nothing counted. User, connection and
    /// node names travel only as KEYS and ARGV, never in the script's source.
    static let acquireUserConnection = RedisScript(
        """
        local key, connection, me = KEYS[1], ARGV[2], ARGV[3]
        local limit = tonumber(ARGV[1])
        local authoritative = ARGV[5] == '1'
        local live = {[me] = true}
        for i = 6, #ARGV do live[ARGV[i]] = true end
        local fields = redis.call('HGETALL', key)
        local held = 0
        local counted = false
        local stale = {}
        for i = 1, #fields, 2 do
          if live[fields[i + 1]] then
            held = held + 1
            if fields[i] == connection then counted = true end
          elseif authoritative then
            stale[#stale + 1] = fields[i]
          else
            return -1
          end
        end
        for _, field in ipairs(stale) do redis.call('HDEL', key, field) end
        if counted then return 1 end
        if held >= limit then return 0 end
        redis.call('HSET', key, connection, me)
        redis.call('EXPIRE', key, ARGV[4])
        return 1
        """
    )
}
