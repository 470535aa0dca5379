-- undo.lua: takes back a queued ticket whose publish failed (the door).
-- KEYS: 1 gate, 2 member index, 3 ticket
-- ARGV: 1 ticket id
-- Reply: 1
-- The unit returns only if the ticket is still merely queued, and the ticket becomes
-- 'withdrawn': a publish that timed out may still have been stored, and the worker that
-- receives it must see that the buyer was told no. The buyer may enter again.
if redis.call('HGET', KEYS[3], 'status') == 'queued' then
  redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[3], 'status', 'withdrawn')
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
