-- Moving-window acquire (as limits' acquire_moving_window.lua) over all of a request's limits
-- at once, answering each window's state, so the request limits and their x-ratelimit-*
-- headers cost one round trip. A request is counted in every window or in none: one refused
-- by the end user's limit does not use up the tenant's (and one refused by the tenant's does
-- not use up the user's).
-- KEYS: the window lists (newest first): the tenant's, then the end user's if any
-- ARGV: timestamp, expiry (s), amount (0: only read the windows), then one limit per key
-- returns {the 1-based index of the first window that refused (0: admitted), then per key:
--          entries in the window, timestamp (string) of the entry whose leaving frees a slot}
-- Entries older than the window are dropped: the list holds at most the window's entries
-- (without that a limit far above the traffic, 10^6 a minute say, kept every request since
-- the key was last idle for a minute, and each call's LINDEX walked an ever longer list).
local timestamp = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local start = timestamp - expiry

local refused = 0
for i = 1, #KEYS do
    local limit = tonumber(ARGV[3 + i])
    if amount > limit then
        refused = i
        break
    end
    local entry = redis.call('lindex', KEYS[i], limit - amount)
    if entry and tonumber(entry) >= start then
        refused = i
        break
    end
end
if refused == 0 and amount > 0 then
    for i = 1, #KEYS do
        for _ = 1, amount do
            redis.call('lpush', KEYS[i], timestamp)
        end
        redis.call('ltrim', KEYS[i], 0, tonumber(ARGV[3 + i]) - 1)
        redis.call('expire', KEYS[i], expiry)
    end
end

-- The oldest entries are at the tail. Under steady traffic only a few of them left the window
-- since the last call: they are popped one by one (O(1) each, from the tail). After a quiet
-- spell (more than POPS expired), the oldest entry still inside the window is found by binary
-- search and everything after it trimmed at once.
local POPS = 8
local function state(key)
    local len = redis.call('llen', key)
    local oldest = nil
    for _ = 1, POPS do
        if len == 0 then break end
        local last = redis.call('lindex', key, -1)
        local value = tonumber(last)
        if value and value >= start then
            oldest = last
            break
        end
        redis.call('rpop', key)
        len = len - 1
    end
    if oldest == nil and len > 0 then
        local low, high, found = 0, len - 1, -1
        while low <= high do
            local mid = math.floor((low + high) / 2)
            local value = tonumber(redis.call('lindex', key, mid))
            if value and value >= start then
                found = mid
                low = mid + 1
            else
                high = mid - 1
            end
        end
        if found < 0 then
            redis.call('del', key)
            len = 0
        else
            redis.call('ltrim', key, 0, found)
            len = found + 1
            oldest = redis.call('lindex', key, found)
        end
    end
    if len == 0 then
        return 0, tostring(timestamp)
    end
    return len, oldest
end

-- The entry whose leaving admits the next request: the oldest one, unless the window holds
-- more entries than the limit allows now (a lowered limit), then the one at the limit.
local result = {refused}
for i = 1, #KEYS do
    local len, oldest = state(KEYS[i])
    local at = tonumber(ARGV[3 + i]) - math.max(amount, 1)
    if at >= 0 and len > at + 1 then
        oldest = redis.call('lindex', KEYS[i], at) or oldest
    end
    result[#result + 1] = len
    result[#result + 1] = oldest
end
return result
