-- enter.lua: decides one buyer's entry into a sale, atomically (the door, per entry).
-- KEYS: 1 gate, 2 seq, 3 member index, 4 meta, 5 the new ticket, 6 waitlist, 7 waitlist seq,
--       8 pre-queue, 9 backlog (all under the sale's hash tag)
-- ARGV: 1 the new ticket's id, 2 member id, 3 now (ms), 4 proof-of-work bits the entry carries,
--       5 how long the sale's keys outlive its end (ms)
-- Reply: one line of words, the outcome first (Lua building a text costs Redis less than a table):
--   'existing <ticket>' | 'queued <ticket> <seq>' | 'waitlisted <ticket> 0' | 'prequeued <ticket> 0'
--   | 'sold_out <ticket> 0' | 'early <starts_at ms>' | 'pow <bits>' | 'ended' | 'unknown'
-- Re-entry never takes a second unit. While anyone is waitlisted, newcomers join the waitlist
-- even if a unit came back: a returned unit goes to the first waitlisted buyer (promote.lua).
local existing = redis.call('GET', KEYS[3])
if existing then return 'existing ' .. existing end
local meta = redis.call('HMGET', KEYS[4], 'starts_at', 'ends_at', 'cancelled', 'waitlist', 'prequeue_at', 'released', 'pow', 'drawing')
if not meta[1] then return 'unknown' end
local now = tonumber(ARGV[3])
if meta[3] == '1' or now >= tonumber(meta[2]) then return 'ended' end
local expire_at = tostring(tonumber(meta[2]) + tonumber(ARGV[5]))
local prequeue_at = tonumber(meta[5] or '0')
local released = meta[6] == '1'
local held = nil
-- 'Before the start' is the door's clock; once the release has read the pre-queue ('drawing')
-- or finished ('released'), the sale has started whatever that clock says.
if now < tonumber(meta[1]) and not released then
  if prequeue_at == 0 or now < prequeue_at then return 'early ' .. meta[1] end
  if meta[8] == '1' then held = KEYS[9] else held = KEYS[8] end
elseif prequeue_at > 0 and not released then
  held = KEYS[9]
end
if tonumber(meta[7] or '0') > tonumber(ARGV[4]) then return 'pow ' .. meta[7] end
local status = 'sold_out'
local seq = '0'
if held then
  redis.call('RPUSH', held, ARGV[1])
  redis.call('PEXPIREAT', held, expire_at)
  status = 'prequeued'
else
  local waitlist = tonumber(meta[4] or '0')
  local waiting = 0
  if waitlist > 0 then waiting = redis.call('LLEN', KEYS[6]) end
  if waiting == 0 and has_unit(KEYS[1]) then
    redis.call('DECR', KEYS[1])
    seq = tostring(redis.call('INCR', KEYS[2]))
    redis.call('PEXPIREAT', KEYS[2], expire_at)
    status = 'queued'
  elseif waiting < waitlist then
    join_waitlist(KEYS[6], KEYS[7], KEYS[5], ARGV[1], expire_at)
    status = 'waitlisted'
  end
end
redis.call('HSET', KEYS[5], 'member', ARGV[2], 'status', status, 'seq', seq, 'seen', ARGV[3])
redis.call('PEXPIREAT', KEYS[5], expire_at)
redis.call('SET', KEYS[3], ARGV[1], 'PXAT', expire_at)
return status .. ' ' .. ARGV[1] .. ' ' .. seq
