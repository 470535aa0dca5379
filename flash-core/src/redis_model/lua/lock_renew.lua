-- lock_renew.lua: renews a lock only for its owner.
-- KEYS: 1 lock
-- ARGV: 1 owner, 2 how long it holds (ms)
-- Reply: 1 when renewed, 0 when another owner holds it or it is gone
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
