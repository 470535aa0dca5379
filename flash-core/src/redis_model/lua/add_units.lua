-- add_units.lua: puts units into an armed gate (an admin added stock, a unit came back).
-- KEYS: 1 gate
-- ARGV: 1 units
-- Reply: the units the gate now holds, or nil when it is not armed (the reconciler arms it
-- from PostgreSQL, which already counts them)
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return nil
