-- Stores a node's report and forgets expired ones (server clock).
-- KEYS: 1 reports (hash node -> JSON), 2 their expiry (sorted set node -> ms).
-- ARGV: 1 node, 2 JSON, 3 expire (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.0f', now), 'LIMIT', 0, 1000)
for _, n in ipairs(gone) do
  redis.call('HDEL', KEYS[1], n)
  redis.call('ZREM', KEYS[2], n)
end
return 1
