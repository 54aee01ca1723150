"""Credentials in Redis: tokens, API keys, device grants, signing keys, login failures.

A part of ``RedisStore``. Records are JSON text made by ``broker.store.codec``; each key names
one entity::

    cc:{clinic:<id>}:api-keys        zset    API key ids of the clinic, score = created_at
    cc:{refresh:<token hash>}        string  RefreshToken JSON; TTL = lifetime + 1 day
    cc:{refresh-family:<id>}         string  revocation time; TTL 90 days
    cc:{api-key:<id>}                string  ApiKey JSON
    cc:{device:<device code hash>}   string  DeviceGrant JSON; TTL = lifetime + 1 hour
    cc:{user-code:<user code>}       string  device code hash; TTL = lifetime of the grant
    cc:{signing-keys}                hash    kid -> SigningKey JSON
    cc:{login-failures:<key>}        hash    count, last_ts, last_at; TTL = the window

Lifetimes are ``expires_at - created_at`` of the record, not "until ``expires_at`` by the
wall clock", so services running on a fake clock still see their records.

Refresh token use, API key revocation and device grant status changes are compare-and-set on
the record (``RedisBase._compare_and_set``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import redis.asyncio as aredis

from broker.domain import ApiKey, DeviceGrant, FailureCount, RefreshToken, SigningKey
from broker.errors import Conflict
from broker.store.codec import decode, encode, format_datetime, parse_datetime
from broker.store.redis_base import RedisBase, text, texts
from broker.store.redis_errors import translated

__all__ = ["DEVICE_GRACE", "FAMILY_REVOKED_TTL", "REFRESH_GRACE", "RedisCredentialsMixin"]

REFRESH_GRACE = timedelta(days=1)
DEVICE_GRACE = timedelta(hours=1)
FAMILY_REVOKED_TTL = timedelta(days=90)

# KEYS[1] hash; ARGV[1] epoch seconds; ARGV[2] ISO time; ARGV[3] window seconds.
# Counts restart from one when the last failure is older than the window.
_LOGIN_FAILURE = """
local last_ts = redis.call('HGET', KEYS[1], 'last_ts')
local count = 1
local ts, at = ARGV[1], ARGV[2]
if last_ts and tonumber(ARGV[1]) - tonumber(last_ts) <= tonumber(ARGV[3]) then
  count = tonumber(redis.call('HGET', KEYS[1], 'count')) + 1
  if tonumber(ARGV[1]) < tonumber(last_ts) then
    ts, at = last_ts, redis.call('HGET', KEYS[1], 'last_at')
  end
end
redis.call('HSET', KEYS[1], 'count', count, 'last_ts', ts, 'last_at', at)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {count, at}
"""


def _ttl(created_at: datetime, expires_at: datetime, grace: timedelta) -> timedelta:
    """Key lifetime of a record valid from ``created_at`` to ``expires_at``, plus ``grace``."""
    return max(expires_at - created_at, timedelta(0)) + grace


def _ms(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


class RedisCredentialsMixin(RedisBase):
    """Refresh tokens, API keys, device grants, signing keys, login failures; for ``RedisStore``."""

    def __init__(self, client: aredis.Redis, prefix: str = "cc") -> None:
        super().__init__(client, prefix)
        self._failure_script = client.register_script(_LOGIN_FAILURE)

    @property
    def _signing_keys(self) -> str:
        return f"{self._prefix}:{{signing-keys}}"

    # refresh tokens

    @translated
    async def create_refresh_token(self, token: RefreshToken) -> None:
        ttl = _ttl(token.created_at, token.expires_at, REFRESH_GRACE)
        key = self._key("refresh", token.token_hash)
        await self._r.set(key, encode(token), px=_ms(ttl))

    @translated
    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        found = await self._r.get(self._key("refresh", token_hash))
        return None if found is None else decode(RefreshToken, found)

    @translated
    async def mark_refresh_token_used(self, token_hash: str, at: datetime) -> bool:
        def use(stored: str) -> str | None:
            token = decode(RefreshToken, stored)
            return None if token.used_at is not None else encode(replace(token, used_at=at))

        return await self._compare_and_set(self._key("refresh", token_hash), use)

    @translated
    async def revoke_refresh_family(self, family_id: str, at: datetime) -> None:
        key = self._key("refresh-family", family_id)
        await self._r.set(key, format_datetime(at), ex=FAMILY_REVOKED_TTL, nx=True)

    @translated
    async def is_refresh_family_revoked(self, family_id: str) -> bool:
        return bool(await self._r.exists(self._key("refresh-family", family_id)))

    # API keys

    @translated
    async def create_api_key(self, key: ApiKey) -> None:
        if not await self._r.set(self._key("api-key", key.id), encode(key), nx=True):
            raise Conflict("API key id exists")
        index = self._key("clinic", key.clinic_id, ":api-keys")
        await self._r.zadd(index, {key.id: key.created_at.timestamp()})

    @translated
    async def get_api_key(self, key_id: str) -> ApiKey | None:
        found = await self._r.get(self._key("api-key", key_id))
        return None if found is None else decode(ApiKey, found)

    @translated
    async def list_api_keys(self, clinic_id: str) -> list[ApiKey]:
        ids = await self._r.zrange(self._key("clinic", clinic_id, ":api-keys"), 0, -1)
        keys = await self._get_many(ApiKey, [self._key("api-key", i) for i in texts(ids)])
        return [k for k in keys if k.clinic_id == clinic_id]

    @translated
    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        def revoke(stored: str) -> str | None:
            key = decode(ApiKey, stored)
            return None if key.revoked_at is not None else encode(replace(key, revoked_at=at))

        return await self._compare_and_set(self._key("api-key", key_id), revoke)

    # RFC 8628 device grants

    @translated
    async def create_device_grant(self, grant: DeviceGrant) -> None:
        lifetime = _ttl(grant.created_at, grant.expires_at, timedelta(0))
        index = self._key("user-code", grant.user_code)
        if not await self._r.set(index, grant.device_code_hash, nx=True, px=_ms(lifetime)):
            raise Conflict("user code in use", code="user_code_taken")
        try:
            key = self._key("device", grant.device_code_hash)
            await self._r.set(key, encode(grant), px=_ms(lifetime + DEVICE_GRACE))
        except BaseException:
            await self._best_effort(
                self._release_script(keys=[index], args=[grant.device_code_hash])
            )
            raise

    @translated
    async def get_device_grant(self, device_code_hash: str) -> DeviceGrant | None:
        found = await self._r.get(self._key("device", device_code_hash))
        return None if found is None else decode(DeviceGrant, found)

    @translated
    async def get_device_grant_by_user_code(self, user_code: str) -> DeviceGrant | None:
        owner = await self._r.get(self._key("user-code", user_code))
        if owner is None:
            return None
        grant = await self.get_device_grant(text(owner))
        return grant if grant is not None and grant.user_code == user_code else None

    @translated
    async def update_device_grant(
        self, grant: DeviceGrant, expected_status: str | None = None
    ) -> bool:
        key = self._key("device", grant.device_code_hash)
        new = encode(grant)
        if expected_status is None:
            return bool(await self._r.set(key, new, xx=True, keepttl=True))

        def swap(stored: str) -> str | None:
            return new if decode(DeviceGrant, stored).status == expected_status else None

        return await self._compare_and_set(key, swap)

    # signing keys

    @translated
    async def put_signing_key(self, key: SigningKey) -> None:
        await self._r.hset(self._signing_keys, key.kid, encode(key))

    @translated
    async def list_signing_keys(self) -> list[SigningKey]:
        stored = await self._r.hvals(self._signing_keys)
        keys = [decode(SigningKey, t) for t in stored]
        return sorted(keys, key=lambda k: (k.created_at, k.kid))

    # login throttling

    @translated
    async def record_login_failure(
        self, key: str, at: datetime, window_seconds: int
    ) -> FailureCount:
        args: list[str | int] = [repr(at.timestamp()), format_datetime(at), max(1, window_seconds)]
        count, last_at = await self._failure_script(
            keys=[self._key("login-failures", key)], args=args
        )
        return FailureCount(count=int(count), last_at=parse_datetime(text(last_at)))

    @translated
    async def get_login_failures(self, key: str) -> FailureCount | None:
        count, last_at = await self._r.hmget(self._key("login-failures", key), ["count", "last_at"])
        if count is None or last_at is None:
            return None
        return FailureCount(count=int(count), last_at=parse_datetime(text(last_at)))

    @translated
    async def clear_login_failures(self, key: str) -> None:
        await self._r.delete(self._key("login-failures", key))
