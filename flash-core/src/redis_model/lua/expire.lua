-- expire.lua: a queued ticket whose buyer stopped polling becomes 'expired' (the drain).
-- KEYS: 1 ticket, 2 gate
-- Reply: 0
-- Its unit goes back to the gate (taken at entry, never from quantity_left; the waitlist gets
-- it first), once: a redelivered expired ticket is no longer 'queued' and changes nothing.
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'expired')
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCR', KEYS[2]) end
end
return 0
