-- measure_rate.lua: the measured drain rate of a sale, for the waiting room's estimates:
-- tickets decided per second over windows of about a second, published when a window closes
-- (the drain). Server time, so every worker agrees.
-- KEYS: 1 rate, 2 window (hash: start, count)
-- ARGV: 1 tickets just decided, 2 how long the rate and window live (s)
-- Reply: 1 when a window closed, else 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[2], 'start', 'count')
local start, count = tonumber(w[1]), tonumber(w[2])
if start and now - start < 1000 then
  redis.call('HINCRBY', KEYS[2], 'count', ARGV[1])
  return 0
end
if start and now > start then
  redis.call('SET', KEYS[1], tostring(count * 1000 / (now - start)), 'EX', ARGV[2])
end
redis.call('HSET', KEYS[2], 'start', now, 'count', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
