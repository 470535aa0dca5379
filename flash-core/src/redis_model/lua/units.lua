-- units.lua: how a ticket is placed, shared by enter.lua, place.lua and promote.lua (Rust puts
-- this file in front of each of them). Waitlist placement is written here and nowhere else.
-- Every key arrives as an argument: each script passes on keys from its KEYS.

-- Whether the gate still holds a unit.
local function has_unit(gate)
  return tonumber(redis.call('GET', gate) or '0') > 0
end

-- Takes a unit from the gate for the ticket `t` (key `ticket`): the next queue number, status
-- 'promoting' and a place in the promoting set until its message is queued. Returns the number.
local function give_unit(gate, seq, promoting, ticket, t, expire_at)
  redis.call('DECR', gate)
  local n = redis.call('INCR', seq)
  redis.call('HSET', ticket, 'status', 'promoting', 'seq', n)
  redis.call('SADD', promoting, t)
  redis.call('PEXPIREAT', promoting, expire_at)
  return n
end

-- Puts the ticket `t` (key `ticket`) at the end of the waitlist with the next waitlist number.
local function join_waitlist(waitlist, wseq, ticket, t, expire_at)
  redis.call('RPUSH', waitlist, t)
  redis.call('PEXPIREAT', waitlist, expire_at)
  local w = redis.call('INCR', wseq)
  redis.call('PEXPIREAT', wseq, expire_at)
  redis.call('HSET', ticket, 'status', 'waitlisted', 'wseq', w)
end

