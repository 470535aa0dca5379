-- promote.lua: gives units that came back to the first waitlisted buyers (the workers).
-- KEYS: 1 gate, 2 waitlist, 3 waitlist left, 4 seq, 5 promoting, 6.. the waitlist's first tickets
-- ARGV: 1 when the sale's keys expire (ms since the epoch), 2.. the ids KEYS[6..] name, as read
--       from the head of the waitlist just before
-- Reply: {tickets taken off the waitlist, then ticket, member, seq of each promoted}
-- Stops at the first ticket that no longer heads the waitlist (another promoter took it), or
-- when the gate is empty. A ticket taken off that is no longer 'waitlisted' gets nothing.
local out = {'0'}
local popped = 0
for i = 2, #ARGV do
  if not has_unit(KEYS[1]) then break end
  if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[2])
  popped = popped + 1
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIREAT', KEYS[3], ARGV[1])
  local key = KEYS[4 + i]
  local ticket = redis.call('HMGET', key, 'member', 'status')
  if ticket[1] and ticket[2] == 'waitlisted' then
    local seq = give_unit(KEYS[1], KEYS[4], KEYS[5], key, ARGV[i], ARGV[1])
    table.insert(out, ARGV[i])
    table.insert(out, ticket[1])
    table.insert(out, tostring(seq))
  end
end
out[1] = tostring(popped)
return out
