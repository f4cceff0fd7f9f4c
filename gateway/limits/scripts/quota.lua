-- One atomic step of a run's quota protocol: one round trip at admission (lease + the first
-- model call's reservation), one per further model call, one at the end.
-- Every key is declared in KEYS and carries the tenant's hash tag (Redis Cluster: one slot).
-- KEYS: lease zset, reservation zset, tokens-per-minute hash (second -> tokens),
--       then the tokens-per-day keys of days base, base + 1, base + 2,
--       then the spend-per-day keys of those days (micro-dollars),
--       then the spend-per-month keys of the months of those days (the caller's calendar)
-- ARGV: op ('a' admit, 'r' reserve, 'e' end, 'p' peek: what is used now), run_id ('' at the end: no lease to release),
--       lease_ttl_ms (0: no lease held / wanted), max_concurrent, tpm_limit, tpd_limit
--       (0 = no such limit), reservation_ttl_ms, reservation_id, amount (tokens; 0 with
--       spend 0: reserve nothing), base day (the caller's day - 1, day = epoch seconds //
--       86400), spend-per-day limit, spend-per-month limit (micro-dollars, 0 = none),
--       spend (the reservation's estimated cost, micro-dollars),
--       then settlements: (reservation member, delta tokens = real - reserved, bucket
--       second, day, delta spend = real - reserved micro-dollars) each.
-- A reservation is a member of the reservation zset (score: its expiry) that carries what it
-- took: '<reservation id>|<tokens>|<micro-dollars>|<bucket second>|<day>' (ARGV[8] is the
-- first three fields; the script adds the second and day it counted on). One that expires
-- unsettled (its replica crashed; a live replica renews its runs' reservations with their
-- leases) gives back what it took, as a settlement to zero, when the next step of the tenant
-- (or a peek) finds it expired.
-- The clock is Redis TIME: 'a' and 'r' count on the day keys of TIME's day; when that day is
-- not among the three (the caller's UTC day is more than one off), they answer an error
-- ('clock skew') after the settlements, which the caller takes as a Redis failure.
-- Settlements are applied first, whatever the outcome of the rest, each at most once.
-- Codes: 0 ok, 1 concurrent, 2 tpm, 3 tpd, 4 spend per day, 5 spend per month.
-- returns
--   'a': {code, in_flight, tpm_used, tpd_used, retry_ms, tpm_reset_ms, spd_used, spm_used,
--         then the reservation: code, tpm_used, tpd_used, retry_ms, bucket, day, spd_used,
--         spm_used}
--   'r': {code, tpm_used, tpd_used, retry_ms, bucket second, day, spd_used, spm_used}
--   'e': 1
--   'p': {in_flight, tpm_used, tpd_used, tpm_reset_ms, spd_used, spm_used}
-- (retry_ms of code 5 is 0: the caller knows when its calendar month ends.)
local base = tonumber(ARGV[10])
-- Adds `delta` to a counter that still exists (one that expired is not recreated).
local function adjust(key, delta)
    if delta ~= 0 and redis.call('EXISTS', key) == 1 then
        redis.call('INCRBY', key, delta)
    end
end
-- Applies a settlement's deltas to the minute bucket and the day and month counters.
local function apply(delta, bucket, day_of, spend_delta)
    if delta ~= 0 and redis.call('HEXISTS', KEYS[3], bucket) == 1 then
        redis.call('HINCRBY', KEYS[3], bucket, delta)
    end
    -- A reservation of a day before `base` (more than a day old) has no keys here: its day
    -- part is skipped (that day is over, nothing reads its counters any more).
    local index = tonumber(day_of) - base
    if index >= 0 and index <= 2 then
        adjust(KEYS[4 + index], delta)
        adjust(KEYS[7 + index], spend_delta)
        adjust(KEYS[10 + index], spend_delta)
    end
end
for i = 14, #ARGV, 5 do
    -- Only an open reservation settles, once: a step retried after its reply was lost finds
    -- it gone (and one that expired has already given back what it took).
    if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
        apply(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]))
    end
end
-- Reservations past their expiry settle to zero: what they took is given back.
local function release_expired(now_ms)
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
    for _, member in ipairs(gone) do
        local amount, spend, bucket, day_of = string.match(member, '|(%d+)|(%d+)|(%d+)|(%d+)$')
        if amount ~= nil then apply(-tonumber(amount), bucket, day_of, -tonumber(spend)) end
    end
    if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms) end
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
release_expired(now_ms)
local tpd_key = KEYS[4 + day - base]
local spd_key = KEYS[7 + day - base]
local spm_key = KEYS[10 + day - base]
local lease_ttl = tonumber(ARGV[3])
local max_concurrent = tonumber(ARGV[4])
local tpm_limit = tonumber(ARGV[5])
local tpd_limit = tonumber(ARGV[6])
local reservation_ttl = tonumber(ARGV[7])
local amount = tonumber(ARGV[9])
local spd_limit = tonumber(ARGV[11])
local spm_limit = tonumber(ARGV[12])
local spend = tonumber(ARGV[13])

-- The rolling minute: the sum of the buckets of the last 60 seconds (older ones deleted).
-- Only sums here: the buckets are listed (for the wait of a refusal) only when refused.
local tpm_used, oldest, expired = 0, nil, nil
local cutoff = now_s - 60
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec <= cutoff then
        if expired == nil then expired = {} end
        expired[#expired + 1] = flat[i]
    else
        tpm_used = tpm_used + tonumber(flat[i + 1])
        if oldest == nil or sec < oldest then oldest = sec end
    end
end
if expired ~= nil then redis.call('HDEL', KEYS[3], unpack(expired)) end
local used = redis.call('MGET', tpd_key, spd_key, spm_key)
local tpd_used = tonumber(used[1] or '0')
local spd_used = tonumber(used[2] or '0')
local spm_used = tonumber(used[3] or '0')
local to_midnight_ms = (86400 - now_s % 86400) * 1000

if op == 'p' then
    -- What is used now (GET /v1/limits), expired reservations given back first.
    local in_flight = redis.call('ZCOUNT', KEYS[1], now_ms, '+inf')
    local tpm_reset_ms = 0
    if oldest ~= nil then tpm_reset_ms = (oldest + 60 - now_s) * 1000 end
    return {in_flight, tpm_used, tpd_used, tpm_reset_ms, spd_used, spm_used}
end

-- Reserve `amount` tokens (the next model call's estimated input + max output) and `spend`
-- micro-dollars (their price).
local function reserve()
    local function refused(code, retry_ms)
        return {code, tpm_used, tpd_used, retry_ms, 0, day, spd_used, spm_used}
    end
    -- A call that costs nothing (a model without a price) is never held back by spend.
    if spend > 0 and spm_limit > 0 and spm_used + spend > spm_limit then return refused(5, 0) end
    if spend > 0 and spd_limit > 0 and spd_used + spend > spd_limit then
        return refused(4, to_midnight_ms)
    end
    if tpd_limit > 0 and tpd_used + amount > tpd_limit then return refused(3, to_midnight_ms) end
    if tpm_limit > 0 and tpm_used + amount > tpm_limit then
        -- seconds until enough of the window has rolled off for `amount` to fit
        local buckets = {}
        for i = 1, #flat, 2 do
            local sec = tonumber(flat[i])
            if sec > cutoff then buckets[#buckets + 1] = {sec, tonumber(flat[i + 1])} end
        end
        table.sort(buckets, function(a, b) return a[1] < b[1] end)
        local excess, wait = tpm_used + amount - tpm_limit, 60
        for _, bucket in ipairs(buckets) do
            excess = excess - bucket[2]
            if excess <= 0 then
                wait = bucket[1] + 60 - now_s
                break
            end
        end
        return refused(2, math.max(wait, 1) * 1000)
    end
    -- A counter gets its TTL when it is created (its value is then what was just added):
    -- a second's bucket is created in that second, a day's key on that day, a month's in
    -- that month, so each outlives the window that reads it.
    if redis.call('HINCRBY', KEYS[3], now_s, amount) == amount then
        redis.call('EXPIRE', KEYS[3], 61)
    end
    if redis.call('INCRBY', tpd_key, amount) == amount then
        redis.call('EXPIRE', tpd_key, 90000)
    end
    if spend > 0 or spd_limit > 0 or spm_limit > 0 then
        if redis.call('INCRBY', spd_key, spend) == spend then
            redis.call('EXPIRE', spd_key, 90000)
        end
        if redis.call('INCRBY', spm_key, spend) == spend then
            redis.call('EXPIRE', spm_key, 2764800)  -- 32 days
        end
    end
    redis.call('ZADD', KEYS[2], now_ms + reservation_ttl, ARGV[8] .. '|' .. now_s .. '|' .. day)
    -- The set outlives its members' expiry (as long as the month counter they may correct):
    -- expired with them, a crashed replica's reservations could never give back what they
    -- took. Settled members are removed, and Redis deletes the set when it is empty.
    redis.call('PEXPIRE', KEYS[2], 2764800000)
    return {0, tpm_used + amount, tpd_used + amount, 0, now_s, day, spd_used + spend,
            spm_used + spend}
end

if op == 'r' then
    if lease_ttl > 0 and redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + lease_ttl, ARGV[2]) == 1 then
        redis.call('PEXPIRE', KEYS[1], lease_ttl)
    end
    return reserve()
end

-- op 'a': admit the run (token and spend windows not exhausted, a lease when capped), then
-- reserve
local tpm_reset_ms = 0
if oldest ~= nil then tpm_reset_ms = (oldest + 60 - now_s) * 1000 end
local none = {0, 0, 0, 0, 0, day, 0, 0}
local function refused(code, in_flight, retry_ms)
    return {code, in_flight, tpm_used, tpd_used, retry_ms, tpm_reset_ms, spd_used, spm_used,
            unpack(none)}
end
-- A run whose first call costs nothing (a model without a price) is never held back by spend.
if spend > 0 and spm_limit > 0 and spm_used >= spm_limit then return refused(5, 0, 0) end
if spend > 0 and spd_limit > 0 and spd_used >= spd_limit then
    return refused(4, 0, to_midnight_ms)
end
if tpd_limit > 0 and tpd_used >= tpd_limit then return refused(3, 0, to_midnight_ms) end
if tpm_limit > 0 and tpm_used >= tpm_limit then
    return refused(2, 0, math.max(tpm_reset_ms, 1000))
end
local in_flight = 0
if max_concurrent > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
    in_flight = redis.call('ZCARD', KEYS[1])
    if in_flight >= max_concurrent then return refused(1, in_flight, 1000) end
    redis.call('ZADD', KEYS[1], now_ms + lease_ttl, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], lease_ttl)
    in_flight = in_flight + 1
end
local r = none
if amount > 0 or spend > 0 then r = reserve() end
return {0, in_flight, tpm_used, tpd_used, 0, tpm_reset_ms, spd_used, spm_used,
        r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]}
