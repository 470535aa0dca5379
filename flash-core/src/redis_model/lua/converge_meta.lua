-- converge_meta.lua: brings a sale's metadata to PostgreSQL's settings (the workers' reconciler).
-- KEYS: 1 meta
-- ARGV: field, value pairs, as arming writes them
-- Reply: how many fields changed (0 for metadata Redis does not hold: arming writes it whole)
-- Fields the pre-queue release writes ('drawing', 'released') are not among the pairs and stay.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local changed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    changed = changed + 1
  end
end
return changed
