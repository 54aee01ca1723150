"""Clinics and users in Redis, with the unique e-mail index (a part of ``RedisStore``).

Records are JSON text made by ``broker.store.codec``; each key names one entity::

    cc:{clinic:<id>}                 string  Clinic JSON
    cc:{clinic:<id>}:users           zset    user ids of the clinic, score = created_at (epoch s)
    cc:{clinic-name:<lower name>}    zset    clinic ids with that name, score = created_at
    cc:{user:<id>}                   string  User JSON
    cc:{email:<email>}               string  user id (unique e-mail index)

The unique e-mail index lives in another slot than the user it points to, so it is written in
steps that are safe to interrupt: ``SET index owner NX PX 30000`` claims the address, then the
user is written, then the claim is made permanent (``PERSIST`` if the index still names the
owner); any failure releases the claim and removes what was written. A crash leaves at worst a
claim that expires by itself, or a permanent entry naming a user that no longer has the address
(``get_user_by_email`` ignores it): the next writer that wants the address reclaims it. A user
is added to its clinic's list last; a crash just before that leaves it out of the list.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import redis.asyncio as aredis

from broker.domain import Clinic, User
from broker.errors import Conflict, NotFound
from broker.store.base import DuplicateEmail
from broker.store.codec import decode, encode
from broker.store.redis_base import RedisBase, text, texts
from broker.store.redis_errors import translated

__all__ = ["CLAIM_TTL_MS", "RedisAccountsMixin"]

CLAIM_TTL_MS = 30_000

# KEYS[1] index; ARGV[1] owner. Makes a claim permanent if it is still the owner's.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""
# KEYS[1] index; ARGV[1] stale owner; ARGV[2] new owner; ARGV[3] claim TTL (ms).
_RECLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


def _score(user: User) -> float:
    return user.created_at.timestamp()


class RedisAccountsMixin(RedisBase):
    """Clinics and users; mixed into ``RedisStore``."""

    def __init__(self, client: aredis.Redis, prefix: str = "cc") -> None:
        super().__init__(client, prefix)
        self._commit_script = client.register_script(_COMMIT)
        self._reclaim_script = client.register_script(_RECLAIM)

    # clinics

    @translated
    async def create_clinic(self, clinic: Clinic) -> None:
        """Insert; names need not be unique (``find_clinic_by_name`` returns the oldest)."""
        if not await self._r.set(self._key("clinic", clinic.id), encode(clinic), nx=True):
            raise Conflict(f"clinic {clinic.id} exists", code="clinic_exists")
        index = self._key("clinic-name", clinic.name.lower())
        await self._r.zadd(index, {clinic.id: clinic.created_at.timestamp()})

    @translated
    async def get_clinic(self, clinic_id: str) -> Clinic | None:
        found = await self._r.get(self._key("clinic", clinic_id))
        return None if found is None else decode(Clinic, found)

    @translated
    async def find_clinic_by_name(self, name: str) -> Clinic | None:
        name = name.lower()
        ids = await self._r.zrange(self._key("clinic-name", name), 0, -1)
        clinics = await self._get_many(Clinic, [self._key("clinic", i) for i in texts(ids)])
        return next((c for c in clinics if c.name.lower() == name), None)

    # users

    @translated
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

    @translated
    async def get_user(self, user_id: str) -> User | None:
        found = await self._r.get(self._key("user", user_id))
        return None if found is None else decode(User, found)

    @translated
    async def get_user_by_email(self, email: str) -> User | None:
        owner = await self._r.get(self._key("email", email))
        if owner is None:
            return None
        user = await self.get_user(text(owner))
        # An entry left by an interrupted write may name a user that has moved on.
        return user if user is not None and user.email == email else None

    @translated
    async def update_user(self, user: User) -> None:
        user_key = self._key("user", user.id)
        found = await self._r.get(user_key)
        if found is None:
            raise NotFound("no such user")
        old = decode(User, found)
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

    @translated
    async def list_clinic_users(self, clinic_id: str) -> list[User]:
        ids = await self._r.zrange(self._clinic_users(clinic_id), 0, -1)
        users = await self._get_many(User, [self._key("user", i) for i in texts(ids)])
        return [u for u in users if u.clinic_id == clinic_id]

    def _clinic_users(self, clinic_id: str) -> str:
        return self._key("clinic", clinic_id, ":users")

    # the unique e-mail index

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
        current = text(current)
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
