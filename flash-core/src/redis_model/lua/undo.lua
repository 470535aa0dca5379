-- undo.lua: takes back a queued ticket whose publish failed (the door).
-- KEYS: 1 gate, 2 member index, 3 ticket
-- ARGV: 1 ticket id
-- Reply: 1 withdrawn, 0 kept
-- The unit returns only if the ticket is still merely queued and no worker has claimed it
-- (claim.lua): then the ticket becomes 'withdrawn', the buyer's index forgets it and they may
-- enter again, and a worker that receives a copy JetStream stored after all sees that the buyer
-- was told no. A claimed or decided ticket is kept: JetStream held it, and the buyer keeps it.
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'queued' and redis.call('HEXISTS', KEYS[3], 'claimed') == 1 then return 0 end
if status and status ~= 'queued' then return 0 end
if status == 'queued' then
  redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[3], 'status', 'withdrawn')
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
