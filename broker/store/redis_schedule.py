"""The schedule in Redis: sessions, availability, sites and the audit trail (part of RedisStore).

Records are msgspec JSON, as in the SQLite store. Times in sorted-set scores are whole
microseconds since the epoch (``micros`` in ``redis_base``): exact in a double, so equal times
compare equal.

Sessions and every index that ``book_session`` reads or writes share the hash tag ``{sched}``:
a booking is then one optimistic transaction (WATCH, read, guard, MULTI/EXEC) in one Redis
Cluster slot. The price: the whole schedule lives on one shard. ::

    cc:{sched}:session:<id>          string  Session JSON
    cc:{sched}:sessions              zset    every session id, score = start
    cc:{sched}:user:<id>             zset    sessions the user (or guest) takes part in
    cc:{sched}:site:<id>             zset    sessions of the capacity site
    cc:{sched}:clinic:<id>           zset    sessions of the clinic
    cc:{sched}:series:<id>           zset    sessions of the recurring series
    cc:{sched}:longest               zset    one member ``max``, score = longest duration (us)

Everything else keys on its own entity, like the accounts::

    cc:{availability:<clinician id>} string  Availability JSON
    cc:{clinic:<id>}:availability    zset    clinician ids, score 0 (ordered by id)
    cc:{site:<id>}                   string  Site JSON
    cc:{session:<id>}:audit          list    AuditEntry JSON, oldest first
"""

from __future__ import annotations

from datetime import datetime, timedelta

from redis.asyncio.client import Pipeline

from broker.scheduling.model import AuditEntry, Availability, Session, SessionStatus, Site
from broker.store.redis_base import (
    MICROSECOND,
    RedisBase,
    begin,
    dump,
    load,
    loaded,
    micros,
    texts,
)
from broker.store.redis_errors import translated
from broker.store.schedule_base import BookingGuard, SessionQuery

__all__ = ["MAX_SESSION", "SCAN_BATCH", "RedisScheduleMixin"]

MAX_SESSION = timedelta(hours=8)  # the booking rules' limit; a longer one widens the lookback
SCAN_BATCH = 200

_INACTIVE = frozenset({SessionStatus.CANCELLED, SessionStatus.NOSHOW})


def _matches(s: Session, q: SessionQuery) -> bool:
    return (
        (q.user_id is None or q.user_id in s.member_ids)
        and (q.clinic_id is None or s.clinic_id == q.clinic_id)
        and (q.series_id is None or s.series_id == q.series_id)
        and (q.starts_from is None or s.start >= q.starts_from)
        and (q.starts_before is None or s.start < q.starts_before)
        and (q.ends_before is None or s.end < q.ends_before)
        and (not q.statuses or s.status in q.statuses)
    )


class RedisScheduleMixin(RedisBase):
    """Sessions, availability, sites and the audit trail; mixed into ``RedisStore``."""

    # key names

    def _sched(self, kind: str, ident: str = "") -> str:
        return (
            f"{self._prefix}:{{sched}}:{kind}:{ident}"
            if ident
            else f"{self._prefix}:{{sched}}:{kind}"
        )

    def _session_indices(self, s: Session) -> list[str]:
        keys = [self._sched("sessions"), self._sched("site", s.site_id)]
        keys += [self._sched("user", uid) for uid in dict.fromkeys(s.member_ids)]
        if s.clinic_id is not None:
            keys.append(self._sched("clinic", s.clinic_id))
        if s.series_id is not None:
            keys.append(self._sched("series", s.series_id))
        return keys

    # sessions

    @translated
    async def book_session(
        self,
        candidate: Session,
        guard: BookingGuard,
        window_start: datetime,
        window_end: datetime,
    ) -> Session:
        own = self._sched("session", candidate.id)
        members = set(candidate.member_ids)
        shared = [self._sched("site", candidate.site_id)]
        shared += [self._sched("user", uid) for uid in sorted(members)]
        longest = self._sched("longest")

        async def attempt(pipe: Pipeline) -> Session:
            await pipe.watch(own, longest, *shared)
            lookback = max(MAX_SESSION, MICROSECOND * int(await pipe.zscore(longest, "max") or 0))
            low, high = micros(window_start - lookback), f"({micros(window_end)}"
            ids: dict[str, None] = {}
            for index in shared:
                found = await pipe.zrange(index, low, high, byscore=True)
                ids.update(dict.fromkeys(texts(found)))
            ids.pop(candidate.id, None)
            keys = [self._sched("session", i) for i in ids]
            nearby: list[Session] = []
            if keys:
                await pipe.watch(*keys)  # a status change of one of them must retry too
                nearby = loaded(Session, await pipe.mget(keys))
            clashing = sorted(
                (
                    s
                    for s in nearby
                    if s.status not in _INACTIVE
                    and s.start < window_end
                    and s.end > window_start
                    and (s.site_id == candidate.site_id or members.intersection(s.member_ids))
                ),
                key=lambda s: (s.start, s.id),
            )
            old = await pipe.get(own)
            final = guard(clashing)
            begin(pipe)
            self._write_session(pipe, final, None if old is None else load(Session, old))
            await pipe.execute()
            return final

        return await self._optimistic(attempt, "booking")

    @translated
    async def get_session(self, session_id: str) -> Session | None:
        found = await self._r.get(self._sched("session", session_id))
        return None if found is None else load(Session, found)

    @translated
    async def update_session(self, session: Session, audit: AuditEntry | None = None) -> None:
        key = self._sched("session", session.id)

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            old = await pipe.get(key)
            begin(pipe)
            self._write_session(pipe, session, None if old is None else load(Session, old))
            if audit is not None:
                pipe.rpush(self._key("session", audit.session_id, ":audit"), dump(audit))
            await pipe.execute()

        await self._optimistic(attempt, "session update")

    def _write_session(self, pipe: Pipeline, s: Session, old: Session | None) -> None:
        """Queue (inside MULTI) the record and its index entries; ``old``'s entries go."""
        if old is not None:
            for index in self._session_indices(old):
                pipe.zrem(index, old.id)
        pipe.set(self._sched("session", s.id), dump(s))
        score = micros(s.start)
        for index in self._session_indices(s):
            pipe.zadd(index, {s.id: score})
        pipe.zadd(self._sched("longest"), {"max": max(0, micros(s.end) - score)}, gt=True)

    @translated
    async def list_sessions(self, query: SessionQuery) -> list[Session]:
        if query.user_id is not None:
            index = self._sched("user", query.user_id)
        elif query.series_id is not None:
            index = self._sched("series", query.series_id)
        elif query.clinic_id is not None:
            index = self._sched("clinic", query.clinic_id)
        else:
            index = self._sched("sessions")
        low: int | str = "-inf" if query.starts_from is None else micros(query.starts_from)
        # A session starts before it ends, so ``ends_before`` bounds the start too.
        bounds = [b for b in (query.starts_before, query.ends_before) if b is not None]
        high: str = f"({micros(min(bounds))}" if bounds else "+inf"
        found: dict[str, Session] = {}
        offset = 0
        # The index is ordered like the answer (start, then id), so scan until it is full.
        while len(found) < query.limit:
            ids = texts(
                await self._r.zrange(index, low, high, byscore=True, offset=offset, num=SCAN_BATCH)
            )
            if not ids:
                break
            offset += len(ids)
            stored = await self._r.mget([self._sched("session", i) for i in ids])
            for s in loaded(Session, stored):
                if _matches(s, query) and len(found) < query.limit:
                    found.setdefault(s.id, s)
        return sorted(found.values(), key=lambda s: (s.start, s.id))

    # availability and sites

    @translated
    async def put_availability(self, availability: Availability) -> None:
        key = self._key("availability", availability.clinician_id)
        old = await self._r.set(key, dump(availability), get=True)
        if old is not None:
            old_clinic = load(Availability, texts([old])[0]).clinic_id
            if old_clinic != availability.clinic_id:
                index = self._key("clinic", old_clinic, ":availability")
                await self._r.zrem(index, availability.clinician_id)
        index = self._key("clinic", availability.clinic_id, ":availability")
        await self._r.zadd(index, {availability.clinician_id: 0})

    @translated
    async def get_availability(self, clinician_id: str) -> Availability | None:
        found = await self._r.get(self._key("availability", clinician_id))
        return None if found is None else load(Availability, found)

    @translated
    async def list_availability(self, clinic_id: str) -> list[Availability]:
        ids = texts(await self._r.zrange(self._key("clinic", clinic_id, ":availability"), 0, -1))
        found = await self._load_many(Availability, [self._key("availability", i) for i in ids])
        return [a for a in found if a.clinic_id == clinic_id]

    @translated
    async def put_site(self, site: Site) -> None:
        await self._r.set(self._key("site", site.id), dump(site))

    @translated
    async def get_site(self, site_id: str) -> Site | None:
        found = await self._r.get(self._key("site", site_id))
        return None if found is None else load(Site, found)

    # audit

    @translated
    async def append_audit(self, entry: AuditEntry) -> None:
        await self._r.rpush(self._key("session", entry.session_id, ":audit"), dump(entry))

    @translated
    async def list_audit(self, session_id: str) -> list[AuditEntry]:
        stored = await self._r.lrange(self._key("session", session_id, ":audit"), 0, -1)
        return loaded(AuditEntry, stored)
