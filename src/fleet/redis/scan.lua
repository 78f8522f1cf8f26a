-- One chunk of a compacted key for a snapshot (src/fleet/redis.rs).
-- KEYS: 1 a sorted set or a hash. ARGV: 1 scan cursor, 2 count,
-- 3 'z' (ZSCAN) or 'h' (HSCAN), 4 longest member kept, 5 longest value kept
-- (a longer one is nothing nolist wrote, and is left out).
-- Returns {next cursor, member, value, member, value, ...}.
local cmd = 'HSCAN'
if ARGV[3] == 'z' then
  cmd = 'ZSCAN'
end
local r = redis.call(cmd, KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items = r[2]
local km, kv = tonumber(ARGV[4]), tonumber(ARGV[5])
-- An explicit count: `#out` on every append walks the table (a quarter of
-- the script's time with chunks of 10,000).
local out, n = {r[1]}, 1
for i = 1, #items, 2 do
  local m, v = items[i], items[i + 1]
  if #m <= km and #v <= kv then
    out[n + 1] = m
    out[n + 2] = v
    n = n + 2
  end
end
return out
