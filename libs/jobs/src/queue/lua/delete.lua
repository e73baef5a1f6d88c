-- Deletes a record with its index entry (and idempotency key, KEYS[4] when given), taking it
-- out of the counts under the state it has now, not the one the caller last read.
-- KEYS: 1 the record, 2 the counts hash, 3 the index, 4 (optional) the idempotency key.
-- ARGV: 1 the job id. Returns 1 when the record existed, else 0.
local raw = redis.call('GET', KEYS[1])
if raw then
  local rec = cjson.decode(raw)
  redis.call('HINCRBY', KEYS[2], countField(rec, rec.state), -1)
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[3], ARGV[1])
if KEYS[4] then redis.call('DEL', KEYS[4]) end
return raw and 1 or 0
