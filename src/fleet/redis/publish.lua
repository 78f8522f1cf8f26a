-- One publishing step of one node, atomic (src/fleet/redis.rs, `publish`).
-- KEYS: 1 stream, 2 seq (hash node -> highest seq), 3 engine bans,
--       4 manual bans, 5 deliveries, 6 watermarks (hash node -> time),
--       7 trimmed (the newest id trimmed away), 8 origin (the stream's
--       first id ever)
-- ARGV: 1 node, 2 now (s), 3 deliveries_since (s), 4 keep (ms),
--       5 max_events, 6 watermark or '', then 5 per message:
--       kind (- nothing, d delivery, b ban, m manual ban, u unban),
--       key (network or target), score (time), payload, seq
-- Returns the node's highest seq afterwards.
local node = ARGV[1]
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local added = 0
local function append(...)
  local id = redis.call('XADD', KEYS[1], '*', ...)
  -- A new stream (first use, or the engine lost its data): readers with
  -- a cursor from before it missed what it no longer holds.
  if fresh then
    redis.call('SET', KEYS[8], id)
    fresh = false
  end
  added = added + 1
end
local last = tonumber(redis.call('HGET', KEYS[2], node)) or 0
local before = last
for i = 7, #ARGV, 5 do
  local kind, key, score, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 4])
  -- Idempotent by (node, seq): a message the engine holds is skipped.
  if seq and seq > last then
    append('p', ARGV[i + 3], 'n', node, 's', ARGV[i + 4])
    if kind == 'd' then
      redis.call('ZADD', KEYS[5], 'GT', score, key)
    elseif kind == 'b' then
      redis.call('ZADD', KEYS[3], 'GT', score, key)
    elseif kind == 'm' then
      redis.call('ZADD', KEYS[4], 'GT', score, key)
    elseif kind == 'u' then
      redis.call('ZREM', KEYS[3], key)
      redis.call('ZREM', KEYS[4], key)
    end
    last = seq
  end
end
if last > before then
  redis.call('HSET', KEYS[2], node, string.format('%.0f', last))
end
-- The watermark after the messages: a reader that sees it has seen them.
if ARGV[6] ~= '' then
  append('w', ARGV[6], 'n', node)
  local held = tonumber(redis.call('HGET', KEYS[6], node))
  if not held or tonumber(ARGV[6]) > held then
    redis.call('HSET', KEYS[6], node, ARGV[6])
  end
end
-- Prunes: the compacted state keeps what is in force.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[3])
-- Trims: up to `cut`, the newest entry older than keep (server clock, as
-- the ids) or beyond max_events, exactly, so that KEYS[7] names the newest
-- entry gone: a reader behind it missed something (read.lua).
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am > bm or (am == bm and as > bs)
end
local cut = nil
local t = redis.call('TIME')
local minid = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
if minid > 0 then
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. string.format('%.0f', minid) .. '-0', '-', 'COUNT', 1)
  if old[1] then
    cut = old[1][1]
  end
end
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  -- Bounded work per step, yet more than it added: the length converges.
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(over, added + 10000))
  local id = first[#first][1]
  if not cut or newer(id, cut) then
    cut = id
  end
end
if cut then
  local ms, seq = split(cut)
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', ms, seq + 1))
  redis.call('SET', KEYS[7], cut)
end
return last
