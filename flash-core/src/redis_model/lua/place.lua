-- place.lua: places drawn pre-queue tickets, then the backlog, in order (the pre-queue release).
-- KEYS: 1 gate, 2 seq, 3 waitlist, 4 waitlist seq, 5 promoting, 6 meta, 7 backlog,
--       8.. the tickets to place, in order
-- ARGV: 1 mode: 'drawn' (the tickets are drawn ones) or 'backlog' (they are the backlog's
--       first, as read just before), 2 when the sale's keys expire (ms since the epoch),
--       3.. the ids of the tickets KEYS[8..] name
-- Reply: {'more' | 'done' | 'stale', then ticket, member, seq of each ticket given a unit}
-- A ticket no longer 'prequeued' was placed before and is skipped. In 'backlog' mode the tickets
-- must still head the backlog ('stale' otherwise, and nothing changes); they leave it, and the
-- call that empties it marks the sale released, atomically with enter.lua, so from then on
-- entries take the gate directly and none is stranded.
local out = {'more'}
local n = #KEYS - 7
if ARGV[1] == 'backlog' and n > 0 then
  local head = redis.call('LRANGE', KEYS[7], 0, n - 1)
  if #head ~= n then return {'stale'} end
  for i = 1, n do
    if head[i] ~= ARGV[2 + i] then return {'stale'} end
  end
end
local waitlist = tonumber(redis.call('HGET', KEYS[6], 'waitlist') or '0')
for i = 1, n do
  local key, t = KEYS[7 + i], ARGV[2 + i]
  local ticket = redis.call('HMGET', key, 'member', 'status')
  if ticket[1] and ticket[2] == 'prequeued' then
    if has_unit(KEYS[1]) then
      local seq = give_unit(KEYS[1], KEYS[2], KEYS[5], key, t, ARGV[2])
      table.insert(out, t)
      table.insert(out, ticket[1])
      table.insert(out, tostring(seq))
    elseif redis.call('LLEN', KEYS[3]) < waitlist then
      join_waitlist(KEYS[3], KEYS[4], key, t, ARGV[2])
    else
      redis.call('HSET', key, 'status', 'sold_out')
    end
  end
end
if ARGV[1] == 'drawn' then return out end
if n > 0 then redis.call('LTRIM', KEYS[7], n, -1) end
if redis.call('LLEN', KEYS[7]) == 0 then
  redis.call('HSET', KEYS[6], 'released', 1)
  out[1] = 'done'
end
return out
