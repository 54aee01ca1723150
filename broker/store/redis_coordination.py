"""Coordination between broker nodes in Redis: leases and once marks (a part of ``RedisStore``).

Each key names one entity::

    cc:{lease:<name>}                string  holder; PX = the lease
    cc:{once:<key>}                  string  "1"; EX = the mark's lifetime
"""

from __future__ import annotations

from broker.store.redis_base import RedisBase
from broker.store.redis_errors import translated

__all__ = ["RedisCoordinationMixin"]

# KEYS[1] lease; ARGV[1] holder; ARGV[2] lease (ms). Take it if free or already the holder's.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RedisCoordinationMixin(RedisBase):
    """Leases (one holder per name) and once marks; mixed into ``RedisStore``."""

    @translated
    async def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        lease = self._r.register_script(_LEASE)
        ms = max(1, int(ttl_seconds * 1000))
        return bool(await lease(keys=[self._key("lease", name)], args=[holder, ms]))

    @translated
    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        once = self._key("once", key)
        return bool(await self._r.set(once, "1", nx=True, ex=max(1, ttl_seconds)))
