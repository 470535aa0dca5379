-- close_waitlist.lua: at a sale's end its waitlisted tickets become 'sold_out' (the workers).
-- KEYS: 1 waitlist, 2 waitlist left, 3.. the waitlist's first tickets
-- ARGV: 1.. the ids KEYS[3..] name, as read from the head of the waitlist just before
-- Reply: {tickets taken off the waitlist, tickets closed}
-- Stops at the first ticket that no longer heads the waitlist.
local popped, closed = 0, 0
for i = 1, #ARGV do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
  redis.call('INCR', KEYS[2])
  popped = popped + 1
  if redis.call('HGET', KEYS[2 + i], 'status') == 'waitlisted' then
    redis.call('HSET', KEYS[2 + i], 'status', 'sold_out')
    closed = closed + 1
  end
end
return {popped, closed}
