"""Webhook endpoints and their durable outbox of deliveries in Redis (a part of ``RedisStore``).

Records are msgspec JSON. An endpoint keys on its own entity::

    cc:{webhook:<id>}                string  WebhookEndpoint JSON
    cc:{clinic:<id>}:webhooks        zset    endpoint ids, score = created_at

The outbox shares ``{outbox}``, so that a delivery and the queues it sits in change together::

    cc:{outbox}:seq                  string  INCR counter that hands out ``Delivery.seq``
    cc:{outbox}:delivery:<id>        string  Delivery JSON
    cc:{outbox}:queue:<endpoint>:<session>  zset  undelivered ids, score = seq (FIFO)
    cc:{outbox}:due                  zset    the head of every queue, score = next attempt
    cc:{outbox}:log:<endpoint>       zset    ids kept for ``list_deliveries``, score = seq
    cc:{outbox}:delivered:<endpoint> zset    delivered ids, score = seq; the oldest beyond
                                             ``DELIVERED_KEPT`` are dropped with their record
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from redis.asyncio.client import Pipeline

from broker.errors import Conflict
from broker.scheduling.model import Delivery, WebhookEndpoint
from broker.store.redis_base import RedisBase, begin, dump, load, loaded, micros, texts
from broker.store.redis_errors import translated

__all__ = ["DELIVERED_KEPT", "RedisOutboxMixin"]

DELIVERED_KEPT = 1000  # delivered deliveries kept per endpoint for the delivery log


def _next_at(d: Delivery) -> datetime:
    return d.next_attempt_at or d.event.occurred_at


def _first_scored(reply: Any) -> tuple[str, float] | None:
    """The first ``(member, score)`` of a ``ZRANGE ... WITHSCORES`` reply."""
    for member, score in reply:
        return texts([member])[0], float(score)
    return None


class RedisOutboxMixin(RedisBase):
    """Webhook endpoints and the outbox of their deliveries; mixed into ``RedisStore``."""

    # key names

    def _outbox(self, *parts: str) -> str:
        return ":".join((f"{self._prefix}:{{outbox}}", *parts))

    def _queue(self, d: Delivery) -> str:
        return self._outbox("queue", d.endpoint_id, d.event.session_id)

    # webhooks

    @translated
    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        if not await self._r.set(self._key("webhook", endpoint.id), dump(endpoint), nx=True):
            raise Conflict(f"webhook {endpoint.id} exists")
        index = self._key("clinic", endpoint.clinic_id, ":webhooks")
        await self._r.zadd(index, {endpoint.id: micros(endpoint.created_at)})

    @translated
    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        found = await self._r.get(self._key("webhook", endpoint_id))
        return None if found is None else load(WebhookEndpoint, found)

    @translated
    async def list_webhooks(self, clinic_id: str) -> list[WebhookEndpoint]:
        ids = texts(await self._r.zrange(self._key("clinic", clinic_id, ":webhooks"), 0, -1))
        found = await self._load_many(WebhookEndpoint, [self._key("webhook", i) for i in ids])
        return [w for w in found if w.clinic_id == clinic_id]

    @translated
    async def delete_webhook(self, endpoint_id: str) -> bool:
        endpoint = await self.get_webhook(endpoint_id)
        if endpoint is None:
            return False
        deleted = await self._r.delete(self._key("webhook", endpoint_id))
        await self._r.zrem(self._key("clinic", endpoint.clinic_id, ":webhooks"), endpoint_id)
        return bool(deleted)

    # the outbox

    @translated
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
            begin(pipe)
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
                pipe.zadd(due, {first.id: micros(_next_at(first))})
            await pipe.execute()

        await self._optimistic(attempt, "outbox")

    @translated
    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        ids = texts(await self._r.zrange(self._outbox("due"), "-inf", micros(now), byscore=True))
        if not ids:
            return []
        found = loaded(Delivery, await self._r.mget([self._outbox("delivery", i) for i in ids]))
        return sorted(found, key=lambda d: d.seq)[:limit]

    @translated
    async def mark_delivered(self, delivery_id: str, at: datetime) -> None:
        key = self._outbox("delivery", delivery_id)
        due = self._outbox("due")
        endpoint: list[str] = []

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            stored = await pipe.get(key)
            if stored is None:
                return
            d = load(Delivery, stored)
            queue = self._queue(d)
            await pipe.watch(queue)
            line = texts(await pipe.zrange(queue, 0, 1))
            after: Delivery | None = None
            if line[:1] == [d.id] and len(line) > 1:
                after_key = self._outbox("delivery", line[1])
                await pipe.watch(after_key)
                after_stored = await pipe.get(after_key)
                after = None if after_stored is None else load(Delivery, after_stored)
            begin(pipe)
            pipe.set(key, dump(replace(d, delivered_at=at)))
            pipe.zrem(queue, d.id)
            if line[:1] == [d.id]:
                pipe.zrem(due, d.id)
                if after is not None:
                    pipe.zadd(due, {after.id: micros(_next_at(after))})
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
        ids = texts(entry[0] for entry in popped)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(self._outbox("log", endpoint_id), *ids)
            pipe.delete(*(self._outbox("delivery", i) for i in ids))
            await pipe.execute()

    @translated
    async def mark_failed(
        self, delivery_id: str, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        key = self._outbox("delivery", delivery_id)

        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(key)
            stored = await pipe.get(key)
            if stored is None:
                return
            d = load(Delivery, stored)
            queue = self._queue(d)
            await pipe.watch(queue)
            head = texts(await pipe.zrange(queue, 0, 0))
            failed = replace(
                d, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error
            )
            begin(pipe)
            pipe.set(key, dump(failed))
            if head == [d.id]:
                pipe.zadd(self._outbox("due"), {d.id: micros(next_attempt_at)})
            await pipe.execute()

        await self._optimistic(attempt, "outbox")

    @translated
    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        ids = texts(await self._r.zrange(self._outbox("log", endpoint_id), 0, limit - 1))
        if not ids:
            return []
        return loaded(Delivery, await self._r.mget([self._outbox("delivery", i) for i in ids]))
