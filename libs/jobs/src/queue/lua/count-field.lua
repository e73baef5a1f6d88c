-- Prepended to each script below when it is loaded (job-records.repository.ts, loadScripts):
-- the field of `gsc:counts` for a record in a state, `<experiment>\t<state>`, as countField in
-- TypeScript makes it (experiment names never hold a tab).
local function countField(rec, state) return rec.experiment .. '\t' .. state end
