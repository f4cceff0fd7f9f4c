-- Before one model call: renew the run's lease and reserve `amount` tokens, atomically.
-- KEYS: lease zset, reservation zset, tokens-per-minute hash, tokens-per-day key prefix
-- ARGV: run_id, reservation_id, amount, tpm_limit, tpd_limit, lease_ttl_ms (0: no lease held),
--       reservation_ttl_ms
-- returns {code (0 ok, 2 tpm, 3 tpd), tpm_used, tpd_used, retry_ms, bucket second, day}
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now_s / 86400)
local amount = tonumber(ARGV[3])
local tpm_limit = tonumber(ARGV[4])
local tpd_limit = tonumber(ARGV[5])
local lease_ttl = tonumber(ARGV[6])
local reservation_ttl = tonumber(ARGV[7])

if lease_ttl > 0 and redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + lease_ttl, ARGV[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], lease_ttl)
end

local tpm_used, buckets = 0, {}
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec <= now_s - 60 then
        redis.call('HDEL', KEYS[3], flat[i])
    else
        local tokens = tonumber(flat[i + 1])
        tpm_used = tpm_used + tokens
        buckets[#buckets + 1] = {sec, tokens}
    end
end
local tpd_key = KEYS[4] .. day
local tpd_used = tonumber(redis.call('GET', tpd_key) or '0')

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
redis.call('ZADD', KEYS[2], now_ms + reservation_ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[2], reservation_ttl)
return {0, tpm_used + amount, tpd_used + amount, 0, now_s, day}
