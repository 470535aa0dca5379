-- outflow_take.lua: takes tokens from a sale's outflow bucket, shared by every worker process.
-- KEYS: 1 bucket (hash: tokens, at)
-- ARGV: 1 rate per second, 2 tokens wanted, 3 how long an idle bucket lives (ms)
-- Reply: the tokens granted
-- The bucket holds at most a fifth of a second of outflow. Time is Redis's own.
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = math.max(1, rate / 5)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local take = math.min(want, math.floor(tokens))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - take), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return take
