-- served.lua: the highest queue number the workers decided only moves forward, whatever order
-- the workers finish in (the drain).
-- KEYS: 1 served counter
-- ARGV: 1 the batch's highest queue number
-- Reply: 1
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
