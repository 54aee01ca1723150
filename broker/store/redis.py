"""``RedisStore``: the ``Store`` protocol on Redis, for many broker nodes sharing state.

Records are JSON text made by ``broker.store.codec``. Every key starts with the prefix (``cc``)
and carries a hash tag ``{...}`` naming one entity, so the keys of one entity share a Redis
Cluster slot and every Lua script touches keys of one slot only::

    cc:{clinic:<id>}                 string  Clinic JSON
    cc:{clinic:<id>}:users           zset    user ids of the clinic, score = created_at (epoch s)
    cc:{clinic:<id>}:api-keys        zset    API key ids of the clinic, score = created_at
    cc:{clinic-name:<lower name>}    zset    clinic ids with that name, score = created_at
    cc:{user:<id>}                   string  User JSON
    cc:{email:<email>}               string  user id (unique e-mail index)
    cc:{refresh:<token hash>}        string  RefreshToken JSON; TTL = lifetime + 1 day
    cc:{refresh-family:<id>}         string  revocation time; TTL 90 days
    cc:{api-key:<id>}                string  ApiKey JSON
    cc:{device:<device code hash>}   string  DeviceGrant JSON; TTL = lifetime + 1 hour
    cc:{user-code:<user code>}       string  device code hash; TTL = lifetime of the grant
    cc:{signing-keys}                hash    kid -> SigningKey JSON
    cc:{login-failures:<key>}        hash    count, last_ts, last_at; TTL = the window

Lifetimes are ``expires_at - created_at`` of the record, not "until ``expires_at`` by the
wall clock", so services running on a fake clock still see their records.

The unique e-mail index lives in another slot than the user it points to, so it is written in
steps that are safe to interrupt: ``SET index owner NX PX 30000`` claims the address, then the
user is written, then the claim is made permanent (``PERSIST`` if the index still names the
owner); any failure releases the claim and removes what was written. A crash leaves at worst a
claim that expires by itself, or a permanent entry naming a user that no longer has the address
(``get_user_by_email`` ignores it): the next writer that wants the address reclaims it. A user
is added to its clinic's list last; a crash just before that leaves it out of the list.

Compare-and-set on one record (refresh token use, API key revocation, device grant status) reads
the record, decides in Python, and writes with a Lua script only if the stored text is still
the text that was read; a lost race re-reads and decides again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from broker.domain import (
    ApiKey,
    Clinic,
    DeviceGrant,
    FailureCount,
    RefreshToken,
    SigningKey,
    User,
)
from broker.errors import Conflict, NotFound, StoreError
from broker.store.base import DuplicateEmail
from broker.store.codec import decode, encode, format_datetime, parse_datetime
from broker.store.redis_errors import translated
from broker.store.redis_schedule import RedisScheduleMixin

if TYPE_CHECKING:
    from broker.store.base import Store

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

CLAIM_TTL_MS = 30_000
REFRESH_GRACE = timedelta(days=1)
DEVICE_GRACE = timedelta(hours=1)
FAMILY_REVOKED_TTL = timedelta(days=90)
CAS_ATTEMPTS = 64
RECONNECT_TRIES = 3  # a command on a connection Redis closed is sent again this often

# KEYS[1] record; ARGV[1] text read before; ARGV[2] new text. Keeps the key's TTL.
_CAS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
# KEYS[1] index; ARGV[1] owner. Makes a claim permanent if it is still the owner's.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""
# KEYS[1] index; ARGV[1] owner. Deletes the entry if it is still the owner's.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# KEYS[1] index; ARGV[1] stale owner; ARGV[2] new owner; ARGV[3] claim TTL (ms).
_RECLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
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

_T = TypeVar("_T")


_translated = translated


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _members(reply: list[Any]) -> list[str]:
    """Members of a plain ``ZRANGE`` reply (no scores) as text."""
    return [_text(m) for m in reply if isinstance(m, str | bytes)]


def _ttl(created_at: datetime, expires_at: datetime, grace: timedelta) -> timedelta:
    """Key lifetime of a record valid from ``created_at`` to ``expires_at``, plus ``grace``."""
    return max(expires_at - created_at, timedelta(0)) + grace


def _ms(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


class RedisStore(RedisScheduleMixin):
    """Accounts and credentials in Redis. The store owns its client: ``close`` closes it."""

    def __init__(self, client: aredis.Redis, prefix: str = "cc") -> None:
        self._r = client
        self._prefix = prefix
        self._cas_script = client.register_script(_CAS)
        self._commit_script = client.register_script(_COMMIT)
        self._release_script = client.register_script(_RELEASE)
        self._reclaim_script = client.register_script(_RECLAIM)
        self._failure_script = client.register_script(_LOGIN_FAILURE)

    @classmethod
    async def connect(cls, url: str, prefix: str = "cc") -> RedisStore:
        """Open a client on ``url`` and check that the server answers."""
        store = cls(
            aredis.Redis.from_url(
                url,
                decode_responses=True,
                # A pooled connection that Redis closed (a restart, a failover) fails its next
                # command; it is reconnected and the command sent again, a few times, quickly.
                retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), RECONNECT_TRIES),
                retry_on_error=[redis.exceptions.ConnectionError],
            ),
            prefix,
        )
        try:
            await store.ping()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def _signing_keys(self) -> str:
        return f"{self._prefix}:{{signing-keys}}"

    def _key(self, kind: str, ident: str, suffix: str = "") -> str:
        return f"{self._prefix}:{{{kind}:{ident}}}{suffix}"

    @_translated
    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()

    # clinics

    @_translated
    async def create_clinic(self, clinic: Clinic) -> None:
        """Insert; names need not be unique (``find_clinic_by_name`` returns the oldest)."""
        if not await self._r.set(self._key("clinic", clinic.id), encode(clinic), nx=True):
            raise Conflict(f"clinic {clinic.id} exists", code="clinic_exists")
        index = self._key("clinic-name", clinic.name.lower())
        await self._r.zadd(index, {clinic.id: clinic.created_at.timestamp()})

    @_translated
    async def get_clinic(self, clinic_id: str) -> Clinic | None:
        text = await self._r.get(self._key("clinic", clinic_id))
        return None if text is None else decode(Clinic, text)

    @_translated
    async def find_clinic_by_name(self, name: str) -> Clinic | None:
        name = name.lower()
        ids = await self._r.zrange(self._key("clinic-name", name), 0, -1)
        clinics = await self._get_many(Clinic, [self._key("clinic", i) for i in _members(ids)])
        return next((c for c in clinics if c.name.lower() == name), None)

    # users

    @_translated
    async def create_user(self, user: User) -> None:
        index = self._key("email", user.email)
        still_indexed = functools.partial(self._has_email, email=user.email)
        if not await self._claim(index, user.id, still_indexed):
            raise DuplicateEmail("e-mail already registered")
        user_key = self._key("user", user.id)
        written = False
        try:
            if not await self._r.set(user_key, encode(user), nx=True):
                raise Conflict("user id exists")
            written = True
            await self._commit(index, user.id, DuplicateEmail("e-mail already registered"))
            if user.clinic_id is not None:
                await self._r.zadd(self._clinic_users(user.clinic_id), {user.id: _score(user)})
        except BaseException:
            await self._best_effort(self._release_script(keys=[index], args=[user.id]))
            if written:
                await self._best_effort(self._r.delete(user_key))
            raise

    @_translated
    async def get_user(self, user_id: str) -> User | None:
        text = await self._r.get(self._key("user", user_id))
        return None if text is None else decode(User, text)

    @_translated
    async def get_user_by_email(self, email: str) -> User | None:
        owner = await self._r.get(self._key("email", email))
        if owner is None:
            return None
        user = await self.get_user(_text(owner))
        # An entry left by an interrupted write may name a user that has moved on.
        return user if user is not None and user.email == email else None

    @_translated
    async def update_user(self, user: User) -> None:
        user_key = self._key("user", user.id)
        text = await self._r.get(user_key)
        if text is None:
            raise NotFound("no such user")
        old = decode(User, text)
        if old.email == user.email:
            await self._r.set(user_key, encode(user), xx=True)
        else:
            await self._change_email(old, user)
        if old.clinic_id != user.clinic_id:
            if old.clinic_id is not None:
                await self._r.zrem(self._clinic_users(old.clinic_id), user.id)
            if user.clinic_id is not None:
                await self._r.zadd(self._clinic_users(user.clinic_id), {user.id: _score(user)})

    async def _change_email(self, old: User, user: User) -> None:
        new_index = self._key("email", user.email)
        still_indexed = functools.partial(self._has_email, email=user.email)
        if not await self._claim(new_index, user.id, still_indexed, own_ok=True):
            raise DuplicateEmail("e-mail already registered")
        user_key = self._key("user", user.id)
        try:
            await self._r.set(user_key, encode(user), xx=True)
            await self._commit(new_index, user.id, DuplicateEmail("e-mail already registered"))
        except BaseException:
            await self._best_effort(self._r.set(user_key, encode(old), xx=True))
            await self._best_effort(self._release_script(keys=[new_index], args=[user.id]))
            raise
        # A failure here leaves a stale entry that the next claimant of the address reclaims.
        old_index = self._key("email", old.email)
        await self._best_effort(self._release_script(keys=[old_index], args=[user.id]))

    async def _has_email(self, user_id: str, email: str) -> bool:
        user = await self.get_user(user_id)
        return user is not None and user.email == email

    @_translated
    async def list_clinic_users(self, clinic_id: str) -> list[User]:
        ids = await self._r.zrange(self._clinic_users(clinic_id), 0, -1)
        users = await self._get_many(User, [self._key("user", i) for i in _members(ids)])
        return [u for u in users if u.clinic_id == clinic_id]

    def _clinic_users(self, clinic_id: str) -> str:
        return self._key("clinic", clinic_id, ":users")

    # refresh tokens

    @_translated
    async def create_refresh_token(self, token: RefreshToken) -> None:
        ttl = _ttl(token.created_at, token.expires_at, REFRESH_GRACE)
        key = self._key("refresh", token.token_hash)
        await self._r.set(key, encode(token), px=_ms(ttl))

    @_translated
    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        text = await self._r.get(self._key("refresh", token_hash))
        return None if text is None else decode(RefreshToken, text)

    @_translated
    async def mark_refresh_token_used(self, token_hash: str, at: datetime) -> bool:
        def use(text: str) -> str | None:
            token = decode(RefreshToken, text)
            return None if token.used_at is not None else encode(replace(token, used_at=at))

        return await self._compare_and_set(self._key("refresh", token_hash), use)

    @_translated
    async def revoke_refresh_family(self, family_id: str, at: datetime) -> None:
        key = self._key("refresh-family", family_id)
        await self._r.set(key, format_datetime(at), ex=FAMILY_REVOKED_TTL, nx=True)

    @_translated
    async def is_refresh_family_revoked(self, family_id: str) -> bool:
        return bool(await self._r.exists(self._key("refresh-family", family_id)))

    # API keys

    @_translated
    async def create_api_key(self, key: ApiKey) -> None:
        if not await self._r.set(self._key("api-key", key.id), encode(key), nx=True):
            raise Conflict("API key id exists")
        index = self._key("clinic", key.clinic_id, ":api-keys")
        await self._r.zadd(index, {key.id: key.created_at.timestamp()})

    @_translated
    async def get_api_key(self, key_id: str) -> ApiKey | None:
        text = await self._r.get(self._key("api-key", key_id))
        return None if text is None else decode(ApiKey, text)

    @_translated
    async def list_api_keys(self, clinic_id: str) -> list[ApiKey]:
        ids = await self._r.zrange(self._key("clinic", clinic_id, ":api-keys"), 0, -1)
        keys = await self._get_many(ApiKey, [self._key("api-key", i) for i in _members(ids)])
        return [k for k in keys if k.clinic_id == clinic_id]

    @_translated
    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        def revoke(text: str) -> str | None:
            key = decode(ApiKey, text)
            return None if key.revoked_at is not None else encode(replace(key, revoked_at=at))

        return await self._compare_and_set(self._key("api-key", key_id), revoke)

    # RFC 8628 device grants

    @_translated
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

    @_translated
    async def get_device_grant(self, device_code_hash: str) -> DeviceGrant | None:
        text = await self._r.get(self._key("device", device_code_hash))
        return None if text is None else decode(DeviceGrant, text)

    @_translated
    async def get_device_grant_by_user_code(self, user_code: str) -> DeviceGrant | None:
        owner = await self._r.get(self._key("user-code", user_code))
        if owner is None:
            return None
        grant = await self.get_device_grant(_text(owner))
        return grant if grant is not None and grant.user_code == user_code else None

    @_translated
    async def update_device_grant(
        self, grant: DeviceGrant, expected_status: str | None = None
    ) -> bool:
        key = self._key("device", grant.device_code_hash)
        new = encode(grant)
        if expected_status is None:
            return bool(await self._r.set(key, new, xx=True, keepttl=True))

        def swap(text: str) -> str | None:
            return new if decode(DeviceGrant, text).status == expected_status else None

        return await self._compare_and_set(key, swap)

    # signing keys

    @_translated
    async def put_signing_key(self, key: SigningKey) -> None:
        await self._r.hset(self._signing_keys, key.kid, encode(key))

    @_translated
    async def list_signing_keys(self) -> list[SigningKey]:
        texts = await self._r.hvals(self._signing_keys)
        keys = [decode(SigningKey, t) for t in texts]
        return sorted(keys, key=lambda k: (k.created_at, k.kid))

    # login throttling

    @_translated
    async def record_login_failure(
        self, key: str, at: datetime, window_seconds: int
    ) -> FailureCount:
        args: list[str | int] = [repr(at.timestamp()), format_datetime(at), max(1, window_seconds)]
        count, last_at = await self._failure_script(
            keys=[self._key("login-failures", key)], args=args
        )
        return FailureCount(count=int(count), last_at=parse_datetime(_text(last_at)))

    @_translated
    async def get_login_failures(self, key: str) -> FailureCount | None:
        count, last_at = await self._r.hmget(self._key("login-failures", key), ["count", "last_at"])
        if count is None or last_at is None:
            return None
        return FailureCount(count=int(count), last_at=parse_datetime(_text(last_at)))

    @_translated
    async def clear_login_failures(self, key: str) -> None:
        await self._r.delete(self._key("login-failures", key))

    # steps shared by the methods above

    async def _claim(
        self,
        index: str,
        owner: str,
        still_indexed: Callable[[str], Awaitable[bool]],
        *,
        own_ok: bool = False,
    ) -> bool:
        """Reserve a unique index entry for ``owner`` (for ``CLAIM_TTL_MS`` until committed).

        True when the entry is now ``owner``'s: newly claimed, reclaimed from a committed entry
        whose record no longer carries the value, or (``own_ok``) already ``owner``'s. A new
        record never takes an entry naming its own id: its rollback would release it.
        """
        if await self._r.set(index, owner, nx=True, px=CLAIM_TTL_MS):
            return True
        current = await self._r.get(index)
        if current is None:  # released meanwhile: try once more
            return bool(await self._r.set(index, owner, nx=True, px=CLAIM_TTL_MS))
        current = _text(current)
        if current == owner:
            return own_ok
        if await self._r.pttl(index) != -1 or await still_indexed(current):
            return False  # a live claim of another writer, or a real owner
        args: list[str | int] = [current, owner, CLAIM_TTL_MS]
        return bool(await self._reclaim_script(keys=[index], args=args))

    async def _commit(self, index: str, owner: str, taken: Conflict) -> None:
        if not await self._commit_script(keys=[index], args=[owner]):
            # The claim lapsed (a stall longer than CLAIM_TTL_MS) and someone else took it.
            raise taken

    async def _compare_and_set(self, key: str, change: Callable[[str], str | None]) -> bool:
        """Replace the text at ``key`` by ``change(text)``; False when absent or it says None."""
        for _ in range(CAS_ATTEMPTS):
            current = await self._r.get(key)
            if current is None:
                return False
            new = change(_text(current))
            if new is None:
                return False
            if await self._cas_script(keys=[key], args=[current, new]):
                return True
        raise StoreError("too many concurrent writers on one record")

    async def _get_many(self, cls: type[_T], keys: list[str]) -> list[_T]:
        # One GET per key in a plain pipeline: the keys live in different cluster slots.
        if not keys:
            return []
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        texts = await pipe.execute()
        return [decode(cls, t) for t in texts if t is not None]

    @staticmethod
    async def _best_effort(step: Awaitable[Any]) -> None:
        """A clean-up step whose failure must not hide the original error (or a success)."""
        try:
            await step
        except redis.exceptions.RedisError as exc:
            log.warning("redis clean-up step failed (%s); it heals by itself", type(exc).__name__)


def _score(user: User) -> float:
    return user.created_at.timestamp()


if TYPE_CHECKING:

    def _conforms(store: RedisStore) -> Store:  # mypy checks the protocol here
        return store
