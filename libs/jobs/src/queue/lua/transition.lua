-- A job's state change, compare-and-set, so a cancel and a start racing on two worker processes
-- cannot both win; published on `gsc:events` for SSE watchers on any process, and kept in the
-- counts in the same step.
-- KEYS: 1 the record (gsc:job:<id>), 2 the events channel, 3 the counts hash.
-- ARGV: 1 the states it may change from, JSON (any state when empty), 2 the patch, JSON.
-- Returns false when there is no such record; {0, record} when it is in none of those states;
-- {1, record after the change, the state before}.
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local rec = cjson.decode(raw)
local from = cjson.decode(ARGV[1])
if #from > 0 then
  local ok = false
  for _, s in ipairs(from) do if rec.state == s then ok = true end end
  if not ok then return {0, raw} end
end
local prev = rec.state
local patch = cjson.decode(ARGV[2])
for k, v in pairs(patch) do rec[k] = v end
local out = cjson.encode(rec)
redis.call('SET', KEYS[1], out)
if prev ~= rec.state then
  redis.call('HINCRBY', KEYS[3], countField(rec, prev), -1)
  redis.call('HINCRBY', KEYS[3], countField(rec, rec.state), 1)
end
redis.call('PUBLISH', KEYS[2], out)
return {1, out, prev}
