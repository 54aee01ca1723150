"""The Lua scripts of ``RedisBus`` (see ``signaling/bus/redis.py`` for the key layout).

Every script touches keys of one Redis Cluster slot: the keys it is given share a hash tag.
"""

from __future__ import annotations

from signaling.bus.wire import Script

TRIM_SLACK = 32  # frames the replay buffer may hold past its limit before it is trimmed

__all__ = [
    "ADD_UNTIL",
    "CLAIM",
    "HEARTBEAT",
    "LIVE",
    "RELEASE",
    "REPLAY",
    "RESYNC",
    "SEND",
    "TOUCH",
    "TRIM_SLACK",
]

# KEYS seq, buf, node; ARGV frame, replay limit, ttl (ms), channel prefix, peer id.
# The buffer is trimmed back to the limit once it holds TRIM_SLACK more (REPLAY reads only the
# limit), and the keys' expiry is set here only when they are new or no node claims the peer:
# a claimed peer's keys are refreshed by its node (TOUCH). Four calls per send, not seven.
SEND = Script.of(
    """
local seq = redis.call('INCR', KEYS[1])
local stamped = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
local kept = redis.call('RPUSH', KEYS[2], stamped)
local limit = tonumber(ARGV[2])
if kept > limit + TRIM_SLACK then
  redis.call('LTRIM', KEYS[2], -limit, -1)
end
local node = redis.call('GET', KEYS[3])
if seq == 1 or kept == 1 or not node then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if node then
  redis.call('PUBLISH', ARGV[4] .. node, ARGV[5] .. '\\n' .. seq .. '\\n' .. stamped)
end
return seq
""".replace("TRIM_SLACK", str(TRIM_SLACK))
)

# KEYS seq, buf, node; ARGV node id, ttl (ms). Returns the seq at the time of the claim.
CLAIM = Script.of("""
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return tonumber(redis.call('GET', KEYS[1]) or '0')
""")

# KEYS key; ARGV owner. Deletes the key if it still names the owner.
RELEASE = Script.of("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
""")

# KEYS seq, buf, node; ARGV node id, ttl (ms). 1 if the claim is still ours (keys refreshed).
TOUCH = Script.of("""
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
""")

# KEYS seq, buf, node; ARGV node id, ttl (ms). {state, seq, frames}: state 0 the claim is ours,
# 1 it was missing and is restored, 2 another node has it (then nothing else).
RESYNC = Script.of("""
local owner = redis.call('GET', KEYS[3])
local state = 0
if not owner then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  state = 1
elseif owner ~= ARGV[1] then
  return {2}
end
return {state, tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('LRANGE', KEYS[2], 0, -1)}
""")

# KEYS seq, buf; ARGV replay limit. {seq, the last frames}, read together (a script runs
# atomically).
REPLAY = Script.of("""
local limit = tonumber(ARGV[1])
return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('LRANGE', KEYS[2], -limit, -1)}
""")

# KEYS nodes; ARGV node id, ttl (s). Scores are server time, so node clocks need not agree.
HEARTBEAT = Script.of("""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return 1
""")

# KEYS zset; ARGV member, ttl (ms). Adds the member with score now + ttl (server time), drops the
# expired ones and makes the key expire with its newest member.
ADD_UNTIL = Script.of("""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) / 1000, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""")

# KEYS a zset scored by expiry (nodes, live calls). The members not expired yet.
LIVE = Script.of("""
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, '+inf')
""")
