-- Renew the concurrency leases of runs still in flight on this replica.
-- KEYS: lease zset of one tenant.  ARGV: lease_ttl_ms, then run ids.
-- Only leases that still exist are renewed (XX): a lease already released or expired stays gone.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + ttl, ARGV[i])
end
if renewed > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return renewed
