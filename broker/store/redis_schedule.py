"""The scheduling half of the Redis store: sessions, availability, invites, webhooks, outbox.

Records are msgspec JSON, as in the SQLite half. Times in sorted-set scores are whole
microseconds since the epoch (``_us``): exact in a double, so equal times compare equal.

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

The outbox shares ``{outbox}``, so that a delivery and the queues it sits in change together::

    cc:{outbox}:seq                  string  INCR counter that hands out ``Delivery.seq``
    cc:{outbox}:delivery:<id>        string  Delivery JSON
    cc:{outbox}:queue:<endpoint>:<session>  zset  undelivered ids, score = seq (FIFO)
    cc:{outbox}:due                  zset    the head of every queue, score = next attempt
    cc:{outbox}:log:<endpoint>       zset    ids kept for ``list_deliveries``, score = seq
    cc:{outbox}:delivered:<endpoint> zset    delivered ids, score = seq; the oldest beyond
                                             ``DELIVERED_KEPT`` are dropped with their record

Everything else keys on its own entity, like the accounts half::

    cc:{availability:<clinician id>} string  Availability JSON
    cc:{clinic:<id>}:availability    zset    clinician ids, score 0 (ordered by id)
    cc:{site:<id>}                   string  Site JSON
    cc:{invite:<id>}                 string  Invite JSON
    cc:{invite-token:<hash>}         string  invite id
    cc:{session:<id>}:invites        zset    invite ids, score = created_at
    cc:{session:<id>}:audit          list    AuditEntry JSON, oldest first
    cc:{feed-user:<user id>}         string  token hash of the user's calendar feed
    cc:{feed-token:<hash>}           string  user id
    cc:{webhook:<id>}                string  WebhookEndpoint JSON
    cc:{clinic:<id>}:webhooks        zset    endpoint ids, score = created_at
    cc:{lease:<name>}                string  holder; PX = the lease
    cc:{once:<key>}                  string  "1"; EX = the mark's lifetime

Index entries that point across slots (invite token, feed token) are checked against the
record they name, so a write interrupted between two keys never answers wrongly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.client import Pipeline

from broker.errors import Conflict, StoreError
from broker.scheduling.model import (
    AuditEntry,
    Availability,
    Delivery,
    Invite,
    Session,
    SessionStatus,
    Site,
    WebhookEndpoint,
)
from broker.store.redis_errors import translated
from broker.store.schedule_base import BookingGuard, SessionQuery

__all__ = ["DELIVERED_KEPT", "RedisScheduleMixin"]

log = logging.getLogger(__name__)

WATCH_ATTEMPTS = 50
MAX_SESSION = timedelta(hours=8)  # the booking rules' limit; a longer one widens the lookback
DELIVERED_KEPT = 1000  # delivered deliveries kept per endpoint for the delivery log
SCAN_BATCH = 200

_INACTIVE = frozenset({SessionStatus.CANCELLED, SessionStatus.NOSHOW})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# KEYS[1] lease; ARGV[1] holder; ARGV[2] lease (ms). Take it if free or already the holder's.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_T = TypeVar("_T")
Change = Callable[[str], str | None]


_translated = translated


def dump(obj: Any) -> str:
    return msgspec.json.encode(obj).decode()


def load(kind: type[_T], raw: str | bytes) -> _T:
    return msgspec.json.decode(raw, type=kind)


def _us(moment: datetime) -> int:
    """Score of an aware datetime: whole microseconds since the epoch."""
    return (moment - _EPOCH) // _US


def _texts(reply: Iterable[Any]) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else m for m in reply if isinstance(m, str | bytes)]


def _loaded(kind: type[_T], texts: Iterable[Any]) -> list[_T]:
    return [load(kind, t) for t in _texts(texts)]


def _next_at(d: Delivery) -> datetime:
    return d.next_attempt_at or d.event.occurred_at


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


def _first_scored(reply: Any) -> tuple[str, float] | None:
    """The first ``(member, score)`` of a ``ZRANGE ... WITHSCORES`` reply."""
    for member, score in reply:
        return _texts([member])[0], float(score)
    return None


def _begin(pipe: Pipeline) -> None:
    """MULTI: the commands that follow are queued for EXEC (redis-py leaves it untyped)."""
    pipe.multi()  # type: ignore[no-untyped-call]


async def _backoff(attempt: int) -> None:
    """A few random milliseconds, so that writers that keep colliding spread out."""
    await asyncio.sleep(random.random() * min(attempt, 10) / 1000)


class RedisScheduleMixin:
    """Mixed into ``RedisStore``; relies on its client, prefix and compare-and-set step."""

    _r: aredis.Redis
    _prefix: str
    _compare_and_set: Callable[[str, Change], Awaitable[bool]]

    # key names

    def _sched(self, kind: str, ident: str = "") -> str:
        return (
            f"{self._prefix}:{{sched}}:{kind}:{ident}"
            if ident
            else f"{self._prefix}:{{sched}}:{kind}"
        )

    def _outbox(self, *parts: str) -> str:
        return ":".join((f"{self._prefix}:{{outbox}}", *parts))

    def _entity(self, kind: str, ident: str, suffix: str = "") -> str:
        return f"{self._prefix}:{{{kind}:{ident}}}{suffix}"

    def _session_indices(self, s: Session) -> list[str]:
        keys = [self._sched("sessions"), self._sched("site", s.site_id)]
        keys += [self._sched("user", uid) for uid in dict.fromkeys(s.member_ids)]
        if s.clinic_id is not None:
            keys.append(self._sched("clinic", s.clinic_id))
        if s.series_id is not None:
            keys.append(self._sched("series", s.series_id))
        return keys

    # sessions

    @_translated
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
            lookback = max(MAX_SESSION, _US * int(await pipe.zscore(longest, "max") or 0))
            low, high = _us(window_start - lookback), f"({_us(window_end)}"
            ids: dict[str, None] = {}
            for index in shared:
                found = await pipe.zrange(index, low, high, byscore=True)
                ids.update(dict.fromkeys(_texts(found)))
            ids.pop(candidate.id, None)
            keys = [self._sched("session", i) for i in ids]
            nearby: list[Session] = []
            if keys:
                await pipe.watch(*keys)  # a status change of one of them must retry too
                nearby = _loaded(Session, await pipe.mget(keys))
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
            _begin(pipe)
            self._write_session(pipe, final, None if old is None else load(Session, old))
            await pipe.execute()
            return final

        return await self._optimistic(attempt, "booking")

    @_translated
    async def get_session(self, session_id: str) -> Session | None:
        text = await self._r.get(self._sched("session", session_id))
        return None if text is None else load(Session, text)

    @_translated
    async def update_session(self, session: Session, audit: AuditEntry | None = None) -> None:
        key = self._sched("session", session.id)

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            old = await pipe.get(key)
            _begin(pipe)
            self._write_session(pipe, session, None if old is None else load(Session, old))
            if audit is not None:
                pipe.rpush(self._entity("session", audit.session_id, ":audit"), dump(audit))
            await pipe.execute()

        await self._optimistic(attempt, "session update")

    def _write_session(self, pipe: Pipeline, s: Session, old: Session | None) -> None:
        """Queue (inside MULTI) the record and its index entries; ``old``'s entries go."""
        if old is not None:
            for index in self._session_indices(old):
                pipe.zrem(index, old.id)
        pipe.set(self._sched("session", s.id), dump(s))
        score = _us(s.start)
        for index in self._session_indices(s):
            pipe.zadd(index, {s.id: score})
        pipe.zadd(self._sched("longest"), {"max": max(0, _us(s.end) - score)}, gt=True)

    @_translated
    async def list_sessions(self, query: SessionQuery) -> list[Session]:
        if query.user_id is not None:
            index = self._sched("user", query.user_id)
        elif query.series_id is not None:
            index = self._sched("series", query.series_id)
        elif query.clinic_id is not None:
            index = self._sched("clinic", query.clinic_id)
        else:
            index = self._sched("sessions")
        low: int | str = "-inf" if query.starts_from is None else _us(query.starts_from)
        # A session starts before it ends, so ``ends_before`` bounds the start too.
        bounds = [b for b in (query.starts_before, query.ends_before) if b is not None]
        high: str = f"({_us(min(bounds))}" if bounds else "+inf"
        found: dict[str, Session] = {}
        offset = 0
        # The index is ordered like the answer (start, then id), so scan until it is full.
        while len(found) < query.limit:
            ids = _texts(
                await self._r.zrange(index, low, high, byscore=True, offset=offset, num=SCAN_BATCH)
            )
            if not ids:
                break
            offset += len(ids)
            texts = await self._r.mget([self._sched("session", i) for i in ids])
            for s in _loaded(Session, texts):
                if _matches(s, query) and len(found) < query.limit:
                    found.setdefault(s.id, s)
        return sorted(found.values(), key=lambda s: (s.start, s.id))

    # availability and sites

    @_translated
    async def put_availability(self, availability: Availability) -> None:
        key = self._entity("availability", availability.clinician_id)
        old = await self._r.set(key, dump(availability), get=True)
        if old is not None:
            old_clinic = load(Availability, _texts([old])[0]).clinic_id
            if old_clinic != availability.clinic_id:
                index = self._entity("clinic", old_clinic, ":availability")
                await self._r.zrem(index, availability.clinician_id)
        index = self._entity("clinic", availability.clinic_id, ":availability")
        await self._r.zadd(index, {availability.clinician_id: 0})

    @_translated
    async def get_availability(self, clinician_id: str) -> Availability | None:
        text = await self._r.get(self._entity("availability", clinician_id))
        return None if text is None else load(Availability, text)

    @_translated
    async def list_availability(self, clinic_id: str) -> list[Availability]:
        ids = _texts(
            await self._r.zrange(self._entity("clinic", clinic_id, ":availability"), 0, -1)
        )
        found = await self._load_many(Availability, [self._entity("availability", i) for i in ids])
        return [a for a in found if a.clinic_id == clinic_id]

    @_translated
    async def put_site(self, site: Site) -> None:
        await self._r.set(self._entity("site", site.id), dump(site))

    @_translated
    async def get_site(self, site_id: str) -> Site | None:
        text = await self._r.get(self._entity("site", site_id))
        return None if text is None else load(Site, text)

    # invites

    @_translated
    async def create_invite(self, invite: Invite) -> None:
        if not await self._r.set(self._entity("invite", invite.id), dump(invite), nx=True):
            raise Conflict(f"invite {invite.id} exists")
        await self._r.set(self._entity("invite-token", invite.token_hash), invite.id)
        index = self._entity("session", invite.session_id, ":invites")
        await self._r.zadd(index, {invite.id: _us(invite.created_at)})

    @_translated
    async def get_invite(self, invite_id: str) -> Invite | None:
        text = await self._r.get(self._entity("invite", invite_id))
        return None if text is None else load(Invite, text)

    @_translated
    async def get_invite_by_token(self, token_hash: str) -> Invite | None:
        invite_id = await self._r.get(self._entity("invite-token", token_hash))
        if invite_id is None:
            return None
        invite = await self.get_invite(_texts([invite_id])[0])
        return invite if invite is not None and invite.token_hash == token_hash else None

    @_translated
    async def list_invites(self, session_id: str) -> list[Invite]:
        ids = _texts(await self._r.zrange(self._entity("session", session_id, ":invites"), 0, -1))
        found = await self._load_many(Invite, [self._entity("invite", i) for i in ids])
        return [i for i in found if i.session_id == session_id]

    @_translated
    async def use_invite(self, invite_id: str, at: datetime) -> Invite | None:
        used: list[Invite] = []

        def use(text: str) -> str | None:
            invite = load(Invite, text)
            if invite.revoked_at is not None or invite.expires_at <= at:
                return None
            if invite.uses >= invite.max_uses:
                return None
            used[:] = [replace(invite, uses=invite.uses + 1)]
            return dump(used[0])

        ok = await self._compare_and_set(self._entity("invite", invite_id), use)
        return used[0] if ok else None

    @_translated
    async def revoke_invite(self, invite_id: str, at: datetime) -> bool:
        def revoke(text: str) -> str | None:
            invite = load(Invite, text)
            return None if invite.revoked_at is not None else dump(replace(invite, revoked_at=at))

        return await self._compare_and_set(self._entity("invite", invite_id), revoke)

    # calendar feeds

    @_translated
    async def set_feed_token(self, user_id: str, token_hash: str) -> None:
        await self._r.set(self._entity("feed-token", token_hash), user_id)
        old = await self._r.set(self._entity("feed-user", user_id), token_hash, get=True)
        if old is not None and old != token_hash:
            await self._r.delete(self._entity("feed-token", _texts([old])[0]))

    @_translated
    async def get_feed_user(self, token_hash: str) -> str | None:
        user_id = await self._r.get(self._entity("feed-token", token_hash))
        if user_id is None:
            return None
        user_id = _texts([user_id])[0]
        # A replaced token whose reverse entry outlived an interrupted write stays dead.
        current = await self._r.get(self._entity("feed-user", user_id))
        return user_id if current == token_hash else None

    # webhooks

    @_translated
    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        if not await self._r.set(self._entity("webhook", endpoint.id), dump(endpoint), nx=True):
            raise Conflict(f"webhook {endpoint.id} exists")
        index = self._entity("clinic", endpoint.clinic_id, ":webhooks")
        await self._r.zadd(index, {endpoint.id: _us(endpoint.created_at)})

    @_translated
    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        text = await self._r.get(self._entity("webhook", endpoint_id))
        return None if text is None else load(WebhookEndpoint, text)

    @_translated
    async def list_webhooks(self, clinic_id: str) -> list[WebhookEndpoint]:
        ids = _texts(await self._r.zrange(self._entity("clinic", clinic_id, ":webhooks"), 0, -1))
        found = await self._load_many(WebhookEndpoint, [self._entity("webhook", i) for i in ids])
        return [w for w in found if w.clinic_id == clinic_id]

    @_translated
    async def delete_webhook(self, endpoint_id: str) -> bool:
        endpoint = await self.get_webhook(endpoint_id)
        if endpoint is None:
            return False
        deleted = await self._r.delete(self._entity("webhook", endpoint_id))
        await self._r.zrem(self._entity("clinic", endpoint.clinic_id, ":webhooks"), endpoint_id)
        return bool(deleted)

    # the outbox

    def _queue(self, d: Delivery) -> str:
        return self._outbox("queue", d.endpoint_id, d.event.session_id)

    @_translated
    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        last = int(await self._r.incrby(self._outbox("seq"), len(deliveries)))
        first_seq = last - len(deliveries) + 1
        stored = [
            replace(d, id=d.id or uuid.uuid4().hex, seq=first_seq + n)
            for n, d in enumerate(deliveries)
        ]
        firsts: dict[str, Delivery] = {}  # queue -> its first new delivery
        for d in stored:
            firsts.setdefault(self._queue(d), d)
        due = self._outbox("due")

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(*firsts)
            heads = {q: _first_scored(await pipe.zrange(q, 0, 0, withscores=True)) for q in firsts}
            _begin(pipe)
            for d in stored:
                pipe.set(self._outbox("delivery", d.id), dump(d))
                pipe.zadd(self._queue(d), {d.id: d.seq})
                pipe.zadd(self._outbox("log", d.endpoint_id), {d.id: d.seq})
            for queue, first in firsts.items():
                head = heads[queue]
                # Seqs are handed out before this transaction, so a racing writer may have
                # queued a later one first: the lowest seq is the head either way.
                if head is not None and head[1] < first.seq:
                    continue
                if head is not None:
                    pipe.zrem(due, head[0])
                pipe.zadd(due, {first.id: _us(_next_at(first))})
            await pipe.execute()

        await self._optimistic(attempt, "outbox")

    @_translated
    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        ids = _texts(await self._r.zrange(self._outbox("due"), "-inf", _us(now), byscore=True))
        if not ids:
            return []
        found = _loaded(Delivery, await self._r.mget([self._outbox("delivery", i) for i in ids]))
        return sorted(found, key=lambda d: d.seq)[:limit]

    @_translated
    async def mark_delivered(self, delivery_id: str, at: datetime) -> None:
        key = self._outbox("delivery", delivery_id)
        due = self._outbox("due")
        endpoint: list[str] = []

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            text = await pipe.get(key)
            if text is None:
                return
            d = load(Delivery, text)
            queue = self._queue(d)
            await pipe.watch(queue)
            line = _texts(await pipe.zrange(queue, 0, 1))
            after: Delivery | None = None
            if line[:1] == [d.id] and len(line) > 1:
                after_key = self._outbox("delivery", line[1])
                await pipe.watch(after_key)
                after_text = await pipe.get(after_key)
                after = None if after_text is None else load(Delivery, after_text)
            _begin(pipe)
            pipe.set(key, dump(replace(d, delivered_at=at)))
            pipe.zrem(queue, d.id)
            if line[:1] == [d.id]:
                pipe.zrem(due, d.id)
                if after is not None:
                    pipe.zadd(due, {after.id: _us(_next_at(after))})
            pipe.zadd(self._outbox("delivered", d.endpoint_id), {d.id: d.seq})
            await pipe.execute()
            endpoint[:] = [d.endpoint_id]

        await self._optimistic(attempt, "outbox")
        if endpoint:
            await self._trim_delivered(endpoint[0])

    async def _trim_delivered(self, endpoint_id: str) -> None:
        """Forget the oldest delivered deliveries of an endpoint beyond ``DELIVERED_KEPT``."""
        delivered = self._outbox("delivered", endpoint_id)
        excess = int(await self._r.zcard(delivered)) - DELIVERED_KEPT
        if excess <= 0:
            return
        popped: list[Any] = await self._r.zpopmin(delivered, excess)
        ids = _texts(entry[0] for entry in popped)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(self._outbox("log", endpoint_id), *ids)
            pipe.delete(*(self._outbox("delivery", i) for i in ids))
            await pipe.execute()

    @_translated
    async def mark_failed(
        self, delivery_id: str, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        key = self._outbox("delivery", delivery_id)

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            text = await pipe.get(key)
            if text is None:
                return
            d = load(Delivery, text)
            queue = self._queue(d)
            await pipe.watch(queue)
            head = _texts(await pipe.zrange(queue, 0, 0))
            failed = replace(
                d, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error
            )
            _begin(pipe)
            pipe.set(key, dump(failed))
            if head == [d.id]:
                pipe.zadd(self._outbox("due"), {d.id: _us(next_attempt_at)})
            await pipe.execute()

        await self._optimistic(attempt, "outbox")

    @_translated
    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        ids = _texts(await self._r.zrange(self._outbox("log", endpoint_id), 0, limit - 1))
        if not ids:
            return []
        return _loaded(Delivery, await self._r.mget([self._outbox("delivery", i) for i in ids]))

    # audit

    @_translated
    async def append_audit(self, entry: AuditEntry) -> None:
        await self._r.rpush(self._entity("session", entry.session_id, ":audit"), dump(entry))

    @_translated
    async def list_audit(self, session_id: str) -> list[AuditEntry]:
        texts = await self._r.lrange(self._entity("session", session_id, ":audit"), 0, -1)
        return _loaded(AuditEntry, texts)

    # trusted contacts

    @_translated
    async def set_trusted_contacts(self, user_id: str, contacts: tuple[str, ...]) -> None:
        await self._r.set(self._entity("trusted", user_id), dump(list(contacts)))

    @_translated
    async def get_trusted_contacts(self, user_id: str) -> tuple[str, ...]:
        text = await self._r.get(self._entity("trusted", user_id))
        return () if text is None else tuple(load(list[str], text))

    # coordination

    @_translated
    async def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        lease = self._r.register_script(_LEASE)
        ms = max(1, int(ttl_seconds * 1000))
        return bool(await lease(keys=[self._entity("lease", name)], args=[holder, ms]))

    @_translated
    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        once = self._entity("once", key)
        return bool(await self._r.set(once, "1", nx=True, ex=max(1, ttl_seconds)))

    # steps shared by the methods above

    async def _optimistic(self, attempt: Callable[[Pipeline], Awaitable[_T]], what: str) -> _T:
        """Run ``attempt`` (WATCH, read, MULTI, EXEC) until no watched key changed under it."""
        async with self._r.pipeline(transaction=True) as pipe:
            for n in range(WATCH_ATTEMPTS):
                try:
                    return await attempt(pipe)
                except redis.exceptions.WatchError:
                    await _backoff(n)  # EXEC failed and reset the pipeline: read again
        raise StoreError(f"too many concurrent writers ({what}); try again")

    async def _load_many(self, kind: type[_T], keys: list[str]) -> list[_T]:
        # One GET per key in a plain pipeline: the keys live in different cluster slots.
        if not keys:
            return []
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return _loaded(kind, await pipe.execute())
