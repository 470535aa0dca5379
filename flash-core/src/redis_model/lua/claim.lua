-- claim.lua: the drain's read of a ticket it fetched from the queue (the workers, per ticket).
-- KEYS: 1 ticket
-- Reply: { status, seen } (nil for a field the ticket lacks)
-- A 'queued' ticket is marked 'claimed' as it is read: a worker holds it from the queue and will
-- decide it, so the door's late undo of a publish that timed out after JetStream stored it
-- (undo.lua) must leave it queued and answer 202. The mark is never removed; a redelivery
-- claims again.
local found = redis.call('HMGET', KEYS[1], 'status', 'seen')
if found[1] == 'queued' then redis.call('HSET', KEYS[1], 'claimed', '1') end
return found
