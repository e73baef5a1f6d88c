-- Builds the counts from every record, once: a no-op when they are built already. One script,
-- so no record changes while it counts. Reads record keys by prefix (ARGV[1]): a single Redis
-- (standalone or behind Sentinel), as everywhere in this repository.
-- KEYS: 1 the counts hash, 2 the mark that they are built, 3 the index.
-- Returns the number of records counted, or -1 when the counts were built already.
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('DEL', KEYS[1])
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then
    local rec = cjson.decode(raw)
    redis.call('HINCRBY', KEYS[1], countField(rec, rec.state), 1)
    n = n + 1
  end
end
redis.call('SET', KEYS[2], '1')
return n
