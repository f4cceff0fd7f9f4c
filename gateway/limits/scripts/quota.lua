-- One atomic step of a run's quota protocol: one round trip at admission (lease + the first
-- model call's reservation), one per further model call, one at the end.
-- Every key is declared in KEYS and carries the tenant's hash tag (Redis Cluster: one slot).
-- KEYS: lease zset, reservation zset, tokens-per-minute hash (second -> tokens),
--       then the tokens-per-day keys of days base, base + 1, base + 2
-- ARGV: op ('a' admit, 'r' reserve, 'e' end), run_id ('' at the end: no lease to release),
--       lease_ttl_ms (0: no lease held / wanted), max_concurrent, tpm_limit, tpd_limit
--       (0 = no such limit), reservation_ttl_ms, reservation_id, amount (0: reserve nothing),
--       base day (the caller's day - 1, day = epoch seconds // 86400),
--       then settlements: (reservation_id, delta = real - reserved, bucket second, day) each.
-- The clock is Redis TIME: 'a' and 'r' count on the day key of TIME's day; when that day is
-- not among the three keys (the caller's UTC day is more than one off), they answer an error
-- ('clock skew') after the settlements, which the caller takes as a Redis failure.
-- Settlements are applied first, whatever the outcome of the rest, each at most once.
-- returns
--   'a': {code (0 ok, 1 concurrent, 2 tpm, 3 tpd), in_flight, tpm_used, tpd_used, retry_ms,
--         tpm_reset_ms, then the reservation: code, tpm_used, tpd_used, retry_ms, bucket, day}
--   'r': {code (0 ok, 2 tpm, 3 tpd), tpm_used, tpd_used, retry_ms, bucket second, day}
--   'e': 1
local base = tonumber(ARGV[10])
for i = 11, #ARGV, 4 do
    -- Only an open reservation settles, once: a step retried after its reply was lost finds
    -- it gone. One pruned by its TTL (a call longer than the TTL) keeps its reserved amount.
    local open = redis.call('ZREM', KEYS[2], ARGV[i]) == 1
    local delta = tonumber(ARGV[i + 1])
    if open and delta ~= 0 then
        if redis.call('HEXISTS', KEYS[3], ARGV[i + 2]) == 1 then
            redis.call('HINCRBY', KEYS[3], ARGV[i + 2], delta)
        end
        -- A reservation of a day before `base` (more than a day old) has no key here: its
        -- day part is skipped (that day is over, nothing reads its counter any more).
        local index = tonumber(ARGV[i + 3]) - base
        if index >= 0 and index <= 2 then
            local day_key = KEYS[4 + index]
            if redis.call('EXISTS', day_key) == 1 then
                redis.call('INCRBY', day_key, delta)
            end
        end
    end
end

local op = ARGV[1]
if op == 'e' then
    if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
    return 1
end

local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now_s / 86400)
if day < base or day > base + 2 then
    return redis.error_reply('clock skew: Redis day ' .. day .. ', caller day ' .. (base + 1))
end
local tpd_key = KEYS[4 + day - base]
local lease_ttl = tonumber(ARGV[3])
local max_concurrent = tonumber(ARGV[4])
local tpm_limit = tonumber(ARGV[5])
local tpd_limit = tonumber(ARGV[6])
local reservation_ttl = tonumber(ARGV[7])
local amount = tonumber(ARGV[9])

local tpm_used, buckets, oldest = 0, {}, nil
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec <= now_s - 60 then
        redis.call('HDEL', KEYS[3], flat[i])
    else
        local tokens = tonumber(flat[i + 1])
        tpm_used = tpm_used + tokens
        buckets[#buckets + 1] = {sec, tokens}
        if oldest == nil or sec < oldest then oldest = sec end
    end
end
local tpd_used = tonumber(redis.call('GET', tpd_key) or '0')

-- Reserve `amount` tokens (the next model call's estimated input + max output).
local function reserve()
    if tpd_limit > 0 and tpd_used + amount > tpd_limit then
        return {3, tpm_used, tpd_used, (86400 - now_s % 86400) * 1000, 0, day}
    end
    if tpm_limit > 0 and tpm_used + amount > tpm_limit then
        -- seconds until enough of the window has rolled off for `amount` to fit
        table.sort(buckets, function(a, b) return a[1] < b[1] end)
        local excess, wait = tpm_used + amount - tpm_limit, 60
        for _, bucket in ipairs(buckets) do
            excess = excess - bucket[2]
            if excess <= 0 then
                wait = bucket[1] + 60 - now_s
                break
            end
        end
        return {2, tpm_used, tpd_used, math.max(wait, 1) * 1000, 0, day}
    end
    redis.call('HINCRBY', KEYS[3], now_s, amount)
    redis.call('EXPIRE', KEYS[3], 61)
    redis.call('INCRBY', tpd_key, amount)
    redis.call('EXPIRE', tpd_key, 90000)
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
    redis.call('ZADD', KEYS[2], now_ms + reservation_ttl, ARGV[8])
    redis.call('PEXPIRE', KEYS[2], reservation_ttl)
    return {0, tpm_used + amount, tpd_used + amount, 0, now_s, day}
end

if op == 'r' then
    if lease_ttl > 0 and redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + lease_ttl, ARGV[2]) == 1 then
        redis.call('PEXPIRE', KEYS[1], lease_ttl)
    end
    return reserve()
end

-- op 'a': admit the run (token windows not exhausted, a lease when capped), then reserve
local tpm_reset_ms = 0
if oldest ~= nil then tpm_reset_ms = (oldest + 60 - now_s) * 1000 end
local none = {0, 0, 0, 0, 0, day}
if tpd_limit > 0 and tpd_used >= tpd_limit then
    return {3, 0, tpm_used, tpd_used, (86400 - now_s % 86400) * 1000, tpm_reset_ms, unpack(none)}
end
if tpm_limit > 0 and tpm_used >= tpm_limit then
    return {2, 0, tpm_used, tpd_used, math.max(tpm_reset_ms, 1000), tpm_reset_ms, unpack(none)}
end
local in_flight = 0
if max_concurrent > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
    in_flight = redis.call('ZCARD', KEYS[1])
    if in_flight >= max_concurrent then
        return {1, in_flight, tpm_used, tpd_used, 1000, tpm_reset_ms, unpack(none)}
    end
    redis.call('ZADD', KEYS[1], now_ms + lease_ttl, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], lease_ttl)
    in_flight = in_flight + 1
end
local r = none
if amount > 0 then r = reserve() end
return {0, in_flight, tpm_used, tpd_used, 0, tpm_reset_ms, r[1], r[2], r[3], r[4], r[5], r[6]}
