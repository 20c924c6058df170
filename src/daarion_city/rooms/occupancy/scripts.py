"""The Lua scripts of the Redis occupancy (``redis.py``): each call is atomic, and the one
that takes a room across the large-room threshold says so (``base.py``)."""

# KEYS: members, socks, rooms, inst, instances, recent, large
# ARGV: user, name, socket, room, entry, instance, now, threshold
ADD = """
redis.call('SADD', KEYS[5], ARGV[6])
redis.call('SADD', KEYS[4], ARGV[5])
local added = redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[1])
local first = 0
if added == 1 and redis.call('SCARD', KEYS[2]) == 1 then first = 1 end
local n = redis.call('HLEN', KEYS[1])
local large = redis.call('EXISTS', KEYS[7])
local crossed = 0
if large == 0 and n > tonumber(ARGV[8]) then
  redis.call('SET', KEYS[7], '1')
  large = 1
  crossed = 1
end
return {first, n, large, crossed}
"""

# KEYS: members, socks, rooms, inst, recent, large
# ARGV: user, socket, room, entry, threshold
REMOVE = """
redis.call('SREM', KEYS[4], ARGV[4])
local removed = redis.call('SREM', KEYS[2], ARGV[2])
local name = false
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 then
  name = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[1]
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[1])
end
local n = redis.call('HLEN', KEYS[1])
local large = redis.call('EXISTS', KEYS[6])
local crossed = 0
if large == 1 and n * 4 < tonumber(ARGV[5]) * 3 then
  redis.call('DEL', KEYS[6])
  large = 0
  crossed = 1
end
return {name, n, large, crossed}
"""

# KEYS: members, large, recent; ARGV: limit
ROSTER = """
local n = redis.call('HLEN', KEYS[1])
local large = redis.call('EXISTS', KEYS[2])
local ids = redis.call('ZREVRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
local names = {}
if #ids > 0 then names = redis.call('HMGET', KEYS[1], unpack(ids)) end
return {n, large, ids, names}
"""
