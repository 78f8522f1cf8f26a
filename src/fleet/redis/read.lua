-- Up to ARGV[2] entries after ARGV[1], with what tells whether the reader
-- missed some, read in one atomic step (nothing is trimmed in between).
-- KEYS: 1 stream, 2 trimmed, 3 origin (publish.lua).
-- ARGV: 1 cursor (an entry id), 2 count, 3 longest value returned (a
-- longer one is cut: the reader skips it as too large).
-- Returns false without a stream, else {last-generated-id, newest id
-- deleted by XDEL (or ''), newest id trimmed (or ''), origin (or ''),
-- entries}, each entry {id, 'p', payload} or {id, 'w', time, node} or
-- {id, '?'}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '', ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then
    deleted = info[i + 1]
  end
end
local limit = tonumber(ARGV[3])
local entries = {}
if tonumber(ARGV[2]) > 0 then
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
    local f = {}
    for i = 1, #e[2], 2 do
      f[e[2][i]] = string.sub(e[2][i + 1], 1, limit)
    end
    if f.p then
      entries[#entries + 1] = {e[1], 'p', f.p}
    elseif f.w and f.n then
      entries[#entries + 1] = {e[1], 'w', f.w, f.n}
    else
      entries[#entries + 1] = {e[1], '?'}
    end
  end
end
local trimmed = redis.call('GET', KEYS[2]) or ''
local origin = redis.call('GET', KEYS[3]) or ''
return {last, deleted, trimmed, origin, entries}
