-- settle.lua: tells a waiting buyer how their order ended (payments, cancellations).
-- KEYS: 1 ticket
-- ARGV: 1 'paid' or 'cancelled'
-- Reply: 0
-- The ticket moves on from 'ordered' (or from 'paid', for a cancellation). A ticket Redis no
-- longer holds stays gone; its poll is answered from PostgreSQL.
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'ordered' or (s == 'paid' and ARGV[1] == 'cancelled') then
  redis.call('HSET', KEYS[1], 'status', ARGV[1])
end
return 0
