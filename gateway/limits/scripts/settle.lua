-- After one model call (or when the run ends with the call unanswered): replace the
-- reservation by the real usage. A bucket that has left the minute window is not revived.
-- KEYS: reservation zset, tokens-per-minute hash, tokens-per-day key (of the reservation's day)
-- ARGV: reservation_id, delta (real - reserved), bucket second
redis.call('ZREM', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[2])
if delta ~= 0 then
    if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
        redis.call('HINCRBY', KEYS[2], ARGV[3], delta)
    end
    if redis.call('EXISTS', KEYS[3]) == 1 then
        redis.call('INCRBY', KEYS[3], delta)
    end
end
return 1
