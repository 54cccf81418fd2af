import RedisClient

/// The Lua scripts of the Redis data model (DESIGN.md "Redis data model").
/// Every script touches the keys of one channel only (one hash tag, one Cluster slot).
enum RedisBrokerScripts {
    /// KEYS: stream, meta, idempotency key ("" for none).
    /// ARGV: pub/sub channel, history size, history TTL (s), meta TTL (s), new epoch, idempotency TTL (s), data, info, time (ns).
    /// Returns {offset, epoch, duplicate}.
    static let publish = RedisScript(
        """
        local stream, meta, idem = KEYS[1], KEYS[2], KEYS[3]
        if idem ~= '' then
          local previous = redis.call('GET', idem)
          if previous then
            local space = string.find(previous, ' ')
            return {tonumber(string.sub(previous, 1, space - 1)), string.sub(previous, space + 1), 1}
          end
        end
        local size = tonumber(ARGV[2])
        local offset = 0
        local epoch = ''
        if size > 0 then
          epoch = redis.call('HGET', meta, 'e')
          if not epoch then
            epoch = ARGV[5]
            redis.call('HSET', meta, 'e', epoch)
          end
          offset = redis.call('HINCRBY', meta, 't', 1)
          if offset == 1 then redis.call('DEL', stream) end
          redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'd', ARGV[7], 'i', ARGV[8])
          redis.call('EXPIRE', stream, ARGV[3])
          redis.call('EXPIRE', meta, ARGV[4])
        end
        redis.call('PUBLISH', ARGV[1], 'p' .. offset .. ' ' .. epoch .. ' ' .. ARGV[9] .. ' ' .. string.len(ARGV[8]) .. ' ' .. ARGV[8] .. ARGV[7])
        if idem ~= '' then
          redis.call('SET', idem, offset .. ' ' .. epoch, 'EX', ARGV[6])
        end
        return {offset, epoch, 0}
        """
    )

    /// KEYS: stream, meta. ARGV: new epoch, meta TTL (s), first id ("-" or "N-0"), count (-1 all, 0 none), reverse ("1"/"0").
    /// Returns {epoch, top, entries}.
    static let history = RedisScript(
        """
        local stream, meta = KEYS[1], KEYS[2]
        local epoch = redis.call('HGET', meta, 'e')
        if not epoch then
          epoch = ARGV[1]
          redis.call('HSET', meta, 'e', epoch)
          redis.call('EXPIRE', meta, ARGV[2])
        end
        local top = tonumber(redis.call('HGET', meta, 't') or '0')
        local count = tonumber(ARGV[4])
        local entries = {}
        if count ~= 0 then
          if ARGV[5] == '1' then
            if count > 0 then
              entries = redis.call('XREVRANGE', stream, '+', ARGV[3], 'COUNT', count)
            else
              entries = redis.call('XREVRANGE', stream, '+', ARGV[3])
            end
          else
            if count > 0 then
              entries = redis.call('XRANGE', stream, ARGV[3], '+', 'COUNT', count)
            else
              entries = redis.call('XRANGE', stream, ARGV[3], '+')
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

    /// KEYS: presence hash, presence zset. ARGV: expiry (s since 1970), key TTL (s), then client and
    /// info JSON for each client.
    static let addPresence = RedisScript(
        """
        for i = 3, #ARGV, 2 do
          redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
          redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
        end
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        redis.call('EXPIRE', KEYS[2], ARGV[2])
        return 1
        """
    )
}
