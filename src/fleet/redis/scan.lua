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
local out = {r[1]}
local km, kv = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, #r[2], 2 do
  if #r[2][i] <= km and #r[2][i + 1] <= kv then
    out[#out + 1] = r[2][i]
    out[#out + 1] = r[2][i + 1]
  end
end
return out
