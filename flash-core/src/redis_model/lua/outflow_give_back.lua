-- outflow_give_back.lua: returns tokens a drain pass took but could not use.
-- KEYS: 1 bucket
-- ARGV: 1 tokens to return
-- Reply: 0
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', tostring(tokens + tonumber(ARGV[1]))) end
return 0
