-- close_prequeue.lua: the pre-queue as the release draws it (the pre-queue release).
-- KEYS: 1 meta, 2 pre-queue
-- Reply: the pre-queued ticket ids, in arrival order
-- Marks the sale 'drawing' in the same step: from then on enter.lua puts a buyer whose door
-- still reads a time before the start behind the pre-queue (the backlog) instead of into it,
-- so the list drawn is the whole pre-queue and a retried release draws the same one.
redis.call('HSET', KEYS[1], 'drawing', 1)
return redis.call('LRANGE', KEYS[2], 0, -1)
