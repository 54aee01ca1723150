"""``RedisBase``: what every part of ``RedisStore`` shares: the client, key names, codecs, steps.

Every key starts with the prefix (``cc``) and carries a Redis Cluster hash tag ``{...}``. Most
keys name one entity (``cc:{user:<id>}``, ``_key``), so the keys of one entity share a slot and
every Lua script touches keys of one slot only; records of several entities are read with a
plain (non-transactional) pipeline. Keys that must change in one transaction share a tag of
their own (``{sched}``, ``{outbox}``). Each part of the store lists the keys it owns.

Account records are JSON text made by ``broker.store.codec`` (read with ``_get_many``);
scheduling records are msgspec JSON (``dump``/``load``, ``_load_many``), the documents the
SQLite store keeps in its ``doc`` columns. Times in sorted-set scores of the scheduling records
are whole microseconds since the epoch (``micros``): exact in a double, so equal times compare
equal.

Compare-and-set on one record (``_compare_and_set``) reads the record, decides in Python, and
writes with a Lua script only if the stored text is still the text that was read; a lost race
re-reads and decides again. A transaction over keys of one slot (``_optimistic``) WATCHes,
reads, and writes in MULTI/EXEC, and starts again when a watched key changed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.client import Pipeline

from broker.errors import StoreError
from broker.store.codec import decode

__all__ = [
    "CAS_ATTEMPTS",
    "MICROSECOND",
    "WATCH_ATTEMPTS",
    "Change",
    "RedisBase",
    "begin",
    "dump",
    "load",
    "loaded",
    "micros",
    "text",
    "texts",
]

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 64
WATCH_ATTEMPTS = 50
MICROSECOND = timedelta(microseconds=1)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# KEYS[1] record; ARGV[1] text read before; ARGV[2] new text. Keeps the key's TTL.
_CAS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
# KEYS[1] index; ARGV[1] owner. Deletes the entry if it is still the owner's.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

_T = TypeVar("_T")
Change = Callable[[str], str | None]


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def texts(reply: Iterable[Any]) -> list[str]:
    """The members of a reply (a plain ``ZRANGE``, ``MGET``) as text, leaving out ``None``."""
    return [text(m) for m in reply if isinstance(m, str | bytes)]


def dump(obj: Any) -> str:
    return msgspec.json.encode(obj).decode()


def load(kind: type[_T], raw: str | bytes) -> _T:
    return msgspec.json.decode(raw, type=kind)


def loaded(kind: type[_T], reply: Iterable[Any]) -> list[_T]:
    return [load(kind, t) for t in texts(reply)]


def micros(moment: datetime) -> int:
    """Score of an aware datetime: whole microseconds since the epoch."""
    return (moment - _EPOCH) // MICROSECOND


def begin(pipe: Pipeline) -> None:
    """MULTI: the commands that follow are queued for EXEC (redis-py leaves it untyped)."""
    pipe.multi()  # type: ignore[no-untyped-call]


async def _backoff(attempt: int) -> None:
    """A few random milliseconds, so that writers that keep colliding spread out."""
    await asyncio.sleep(random.random() * min(attempt, 10) / 1000)


class RedisBase:
    """The client and prefix of the store, and the steps its parts share."""

    def __init__(self, client: aredis.Redis, prefix: str = "cc") -> None:
        self._r = client
        self._prefix = prefix
        self._cas_script = client.register_script(_CAS)
        self._release_script = client.register_script(_RELEASE)

    def _key(self, kind: str, ident: str, suffix: str = "") -> str:
        """The key of one entity: ``<prefix>:{<kind>:<ident>}<suffix>``."""
        return f"{self._prefix}:{{{kind}:{ident}}}{suffix}"

    async def _compare_and_set(self, key: str, change: Change) -> bool:
        """Replace the text at ``key`` by ``change(text)``; False when absent or it says None."""
        for _ in range(CAS_ATTEMPTS):
            current = await self._r.get(key)
            if current is None:
                return False
            new = change(text(current))
            if new is None:
                return False
            if await self._cas_script(keys=[key], args=[current, new]):
                return True
        raise StoreError("too many concurrent writers on one record")

    async def _optimistic(self, attempt: Callable[[Pipeline], Awaitable[_T]], what: str) -> _T:
        """Run ``attempt`` (WATCH, read, MULTI, EXEC) until no watched key changed under it."""
        async with self._r.pipeline(transaction=True) as pipe:
            for n in range(WATCH_ATTEMPTS):
                try:
                    return await attempt(pipe)
                except redis.exceptions.WatchError:
                    await _backoff(n)  # EXEC failed and reset the pipeline: read again
        raise StoreError(f"too many concurrent writers ({what}); try again")

    async def _get_many(self, cls: type[_T], keys: list[str]) -> list[_T]:
        """The ``broker.store.codec`` records at ``keys`` that exist, in order."""
        return [decode(cls, t) for t in await self._get_texts(keys) if t is not None]

    async def _load_many(self, kind: type[_T], keys: list[str]) -> list[_T]:
        """The msgspec records at ``keys`` that exist, in order."""
        return loaded(kind, await self._get_texts(keys))

    async def _get_texts(self, keys: list[str]) -> list[Any]:
        # One GET per key in a plain pipeline: the keys live in different cluster slots.
        if not keys:
            return []
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return list(await pipe.execute())

    @staticmethod
    async def _best_effort(step: Awaitable[Any]) -> None:
        """A clean-up step whose failure must not hide the original error (or a success)."""
        try:
            await step
        except redis.exceptions.RedisError as exc:
            log.warning("redis clean-up step failed (%s); it heals by itself", type(exc).__name__)
