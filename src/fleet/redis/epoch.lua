-- The engine's epoch, set to ARGV[1] if it has none. KEYS: 1 epoch.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
