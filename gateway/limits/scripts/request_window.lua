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

-- The oldest entries are at the tail. Under steady traffic only a few of them left the window
-- since the last call: they are popped one by one (O(1) each, from the tail). After a quiet
-- spell (more than POPS expired), the oldest entry still inside the window is found by binary
-- search and everything after it trimmed at once.
local POPS = 8
local len = redis.call('llen', KEYS[1])
local oldest = nil
for _ = 1, POPS do
    if len == 0 then break end
    local last = redis.call('lindex', KEYS[1], -1)
    local value = tonumber(last)
    if value and value >= start then
        oldest = last
        break
    end
    redis.call('rpop', KEYS[1])
    len = len - 1
end
if oldest == nil and len > 0 then
    local low, high, found = 0, len - 1, -1
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
        redis.call('del', KEYS[1])
        len = 0
    else
        redis.call('ltrim', KEYS[1], 0, found)
        len = found + 1
        oldest = redis.call('lindex', KEYS[1], found)
    end
end
if len == 0 then
    return {acquired, 0, tostring(timestamp)}
end
return {acquired, len, oldest}
