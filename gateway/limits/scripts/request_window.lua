-- Moving-window acquire (as limits' acquire_moving_window.lua) that also answers the window's
-- state, so the request limit and its x-ratelimit-* headers cost one round trip.
-- KEYS[1]: the window list (newest first); ARGV: timestamp, limit, expiry (s), amount
-- returns {acquired (0/1), entries in the window, oldest entry timestamp (string)}
-- Entries older than the window are dropped: the list holds at most the window's entries
-- (without that a limit far above the traffic, 10^6 a minute say, kept every request since
-- the key was last idle for a minute, and each call's LINDEX walked an ever longer list).
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local start = timestamp - expiry

local acquired = 0
if amount <= limit then
    local entry = redis.call('lindex', KEYS[1], limit - amount)
    if not (entry and tonumber(entry) >= start) then
        for _ = 1, amount do
            redis.call('lpush', KEYS[1], timestamp)
        end
        redis.call('ltrim', KEYS[1], 0, limit - 1)
        redis.call('expire', KEYS[1], expiry)
        acquired = 1
    end
end

-- binary search for the oldest entry still inside the window
local low, high, found = 0, redis.call('llen', KEYS[1]) - 1, -1
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', KEYS[1], mid))
    if value and value >= start then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if found < 0 then
    return {acquired, 0, tostring(timestamp)}
end
redis.call('ltrim', KEYS[1], 0, found)
return {acquired, found + 1, redis.call('lindex', KEYS[1], found)}
