-- take_units.lua: takes units out of the gate only if it holds that many (an admin withdrew
-- stock), atomically with the door's admissions.
-- KEYS: 1 gate
-- ARGV: 1 units
-- Reply: {1, left} when taken, {0, held} when the gate holds fewer, {-1, 0} when not armed
local v = redis.call('GET', KEYS[1])
if not v then return {-1, 0} end
v = tonumber(v)
local n = tonumber(ARGV[1])
if v < n then return {0, v} end
return {1, redis.call('DECRBY', KEYS[1], n)}
