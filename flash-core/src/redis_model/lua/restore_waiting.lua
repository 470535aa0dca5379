-- restore_waiting.lua: puts waiting tickets back into a Redis that lost them (the reconciler).
-- KEYS: 1 waitlist, 2 waitlist seq, 3 pre-queue, then per ticket: its hash, its buyer's index
-- ARGV: 1 when the sale's keys expire (ms since the epoch), 2 now (ms), then per ticket: its
--       id, its buyer, 'waitlisted' or 'prequeued'
-- Reply: how many tickets were restored
-- Tickets come in the order they entered (PostgreSQL's copy, `waiting_tickets`); one Redis
-- still holds is skipped, so a repeated call restores nothing twice. A waitlisted ticket gets
-- the next waitlist number and the back of the waitlist, a pre-queued one the back of the
-- pre-queue, as at entry.
local restored = 0
local n = (#KEYS - 3) / 2
for i = 1, n do
  local ticket, index = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local t, member, kind = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if redis.call('EXISTS', ticket) == 0 then
    redis.call('HSET', ticket, 'member', member, 'status', kind, 'seq', '0', 'seen', ARGV[2])
    if kind == 'waitlisted' then
      join_waitlist(KEYS[1], KEYS[2], ticket, t, ARGV[1])
    else
      redis.call('RPUSH', KEYS[3], t)
      redis.call('PEXPIREAT', KEYS[3], ARGV[1])
    end
    redis.call('PEXPIREAT', ticket, ARGV[1])
    redis.call('SET', index, t, 'PXAT', ARGV[1])
    restored = restored + 1
  end
end
return restored
