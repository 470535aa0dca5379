-- correct_gate.lua: sets a gate the reconciler found off, if it still holds what was read.
-- KEYS: 1 gate
-- ARGV: 1 the units read, 2 the units it must hold
-- Reply: 1 when set, 0 when the gate moved since (or is gone) and nothing changed
-- Compare-and-set: an admission or a returned unit since the reading wins, and the next pass
-- reads again. The gate keeps its expiry.
local units = redis.call('GET', KEYS[1])
if units == false or units ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
