-- Raise a tenant's day and month windows to at least what its usage records say it used
-- (a budget set mid-day or mid-month counts what was used before it was set).
-- KEYS: tokens-per-day key, spend-per-day key, spend-per-month key (today's, this month's)
-- ARGV: tokens used today, micro-dollars spent today, micro-dollars spent this month
-- Each counter becomes max(counter, ARGV[i]); a raised key keeps the TTL quota.lua gives it.
local ttls = {90000, 90000, 2764800}
for i = 1, 3 do
    local want = tonumber(ARGV[i])
    if want > 0 then
        local current = tonumber(redis.call('GET', KEYS[i]) or '0')
        if current < want then
            redis.call('SET', KEYS[i], want, 'EX', ttls[i])
        end
    end
end
return 0
