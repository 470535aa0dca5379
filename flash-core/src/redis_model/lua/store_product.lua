-- store_product.lua: caches a product unless a newer version is cached (catalog-api reads,
-- every stock change writes a tombstone), so a reader that fetched the row just before a write
-- can never put the old product back.
-- KEYS: 1 the product's cache entry ('<version>|<json>'; '<version>|' is a tombstone)
-- ARGV: 1 version, 2 json (empty: a tombstone), 3 time to live (s)
-- Reply: 1 when stored, 0 when a newer version is cached
local current = redis.call('GET', KEYS[1])
if current then
  local cached = tonumber(string.match(current, '^(%d+)|'))
  if cached and cached > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
