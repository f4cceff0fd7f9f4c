-- Renew the concurrency leases and the open token reservations of runs still in flight on
-- this replica (a crashed replica renews nothing: its leases expire, and its reservations
-- expire and give back what they took, see quota.lua).
-- KEYS: lease zset, reservation zset of one tenant.  ARGV: ttl_ms, then run ids.
-- Only entries that still exist and have not expired are renewed: a lease already released
-- stays gone, and an expired reservation is left to be given back.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local runs = {}
local renewed = 0
for i = 2, #ARGV do
    runs[ARGV[i]] = true
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + ttl, ARGV[i])
end
if renewed > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
-- A reservation member starts with '<run id>:<n>|'.
local kept = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now_ms, '+inf')) do
    local run_id = string.match(member, '^(.*):%d+|')
    if run_id ~= nil and runs[run_id] then
        kept = kept + redis.call('ZADD', KEYS[2], 'XX', 'CH', now_ms + ttl, member)
    end
end
-- (The set's own TTL is left alone: it must outlive expired members, see quota.lua.)
return renewed + kept
