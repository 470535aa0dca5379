-- lock_release.lua: releases a lock only for its owner.
-- KEYS: 1 lock
-- ARGV: 1 owner
-- Reply: 1 when released, else 0
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
