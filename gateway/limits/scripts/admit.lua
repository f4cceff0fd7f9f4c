-- Admit a run: check the token windows and take a concurrency lease, atomically.
-- KEYS: lease zset, tokens-per-minute hash (second -> tokens), tokens-per-day key prefix
-- ARGV: run_id, max_concurrent, tpm_limit, tpd_limit, lease_ttl_ms (0 = no such limit)
-- returns {code (0 ok, 1 concurrent, 2 tpm, 3 tpd), in_flight, tpm_used, tpd_used,
--          retry_ms, tpm_reset_ms}
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now_s / 86400)
local max_concurrent = tonumber(ARGV[2])
local tpm_limit = tonumber(ARGV[3])
local tpd_limit = tonumber(ARGV[4])
local lease_ttl = tonumber(ARGV[5])

local tpm_used, oldest = 0, nil
if tpm_limit > 0 then
    local flat = redis.call('HGETALL', KEYS[2])
    for i = 1, #flat, 2 do
        local sec = tonumber(flat[i])
        if sec <= now_s - 60 then
            redis.call('HDEL', KEYS[2], flat[i])
        else
            tpm_used = tpm_used + tonumber(flat[i + 1])
            if oldest == nil or sec < oldest then oldest = sec end
        end
    end
end
local tpm_reset_ms = 0
if oldest ~= nil then tpm_reset_ms = (oldest + 60 - now_s) * 1000 end
local tpd_used = 0
if tpd_limit > 0 then tpd_used = tonumber(redis.call('GET', KEYS[3] .. day) or '0') end

if tpd_limit > 0 and tpd_used >= tpd_limit then
    return {3, 0, tpm_used, tpd_used, (86400 - now_s % 86400) * 1000, tpm_reset_ms}
end
if tpm_limit > 0 and tpm_used >= tpm_limit then
    return {2, 0, tpm_used, tpd_used, math.max(tpm_reset_ms, 1000), tpm_reset_ms}
end
local in_flight = 0
if max_concurrent > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
    in_flight = redis.call('ZCARD', KEYS[1])
    if in_flight >= max_concurrent then
        return {1, in_flight, tpm_used, tpd_used, 1000, tpm_reset_ms}
    end
    redis.call('ZADD', KEYS[1], now_ms + lease_ttl, ARGV[1])
    redis.call('PEXPIRE', KEYS[1], lease_ttl)
    in_flight = in_flight + 1
end
return {0, in_flight, tpm_used, tpd_used, 0, tpm_reset_ms}
