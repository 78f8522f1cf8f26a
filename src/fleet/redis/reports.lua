-- The reports not expired (server clock), at most ARGV[1] of them, none
-- longer than ARGV[2] bytes. KEYS as in report.lua.
-- Returns {node, JSON, node, JSON, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%.0f', now), '+inf', 'LIMIT', 0, ARGV[1])
local out = {}
for _, n in ipairs(live) do
  local json = redis.call('HGET', KEYS[1], n)
  if json and #json <= tonumber(ARGV[2]) then
    out[#out + 1] = n
    out[#out + 1] = json
  end
end
return out
