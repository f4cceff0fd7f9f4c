-- What is used now (for GET /v1/limits): runs in flight, tokens this minute and today, spend
-- today and this month.
-- KEYS: lease zset, tokens-per-minute hash, then the tokens-per-day keys of days base,
--       base + 1, base + 2, the spend-per-day keys of those days and the spend-per-month keys
--       of their months (all with the tenant's hash tag: one Redis Cluster slot)
-- ARGV: base day (the caller's day - 1, day = epoch seconds // 86400)
-- The clock is Redis TIME; when its day is not among the three keys (the caller's clock is
-- more than a day off) the answer is an error ('clock skew'), taken as a Redis failure.
-- returns {in_flight, tpm_used, tpd_used, tpm_reset_ms, spd_used, spm_used}
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now_s / 86400)
local base = tonumber(ARGV[1])
if day < base or day > base + 2 then
    return redis.error_reply('clock skew: Redis day ' .. day .. ', caller day ' .. (base + 1))
end
local in_flight = redis.call('ZCOUNT', KEYS[1], now_ms, '+inf')
local tpm_used, oldest = 0, nil
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec > now_s - 60 then
        tpm_used = tpm_used + tonumber(flat[i + 1])
        if oldest == nil or sec < oldest then oldest = sec end
    end
end
local tpm_reset_ms = 0
if oldest ~= nil then tpm_reset_ms = (oldest + 60 - now_s) * 1000 end
local tpd_used = tonumber(redis.call('GET', KEYS[3 + day - base]) or '0')
local spd_used = tonumber(redis.call('GET', KEYS[6 + day - base]) or '0')
local spm_used = tonumber(redis.call('GET', KEYS[9 + day - base]) or '0')
return {in_flight, tpm_used, tpd_used, tpm_reset_ms, spd_used, spm_used}
