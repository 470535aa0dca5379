-- confirm_promoted.lua: a ticket handed a unit (by place.lua or promote.lua) is 'queued' once
-- its message is in the queue, unless a worker already decided it (the pre-queue release and
-- the workers' promoter both confirm, so either finishes what the other started).
-- KEYS: 1 ticket, 2 the sale's promoting set
-- ARGV: 1 ticket id
-- Reply: 1
if redis.call('HGET', KEYS[1], 'status') == 'promoting' then
  redis.call('HSET', KEYS[1], 'status', 'queued')
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
