"""The webhook outbox in the SQLite store: endpoints and their queued deliveries, handed out
in order per endpoint and session. Records are msgspec JSON documents."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from broker.errors import Conflict
from broker.scheduling.model import Delivery, WebhookEndpoint
from broker.store.codec import format_datetime as ts
from broker.store.sqlite_connection import SqliteRunner
from broker.store.sqlite_rows import dump, load


class SqliteOutboxMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

    # webhook endpoints
    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        try:
            await self._run(
                lambda c: c.execute(
                    "INSERT INTO webhooks (id, clinic_id, created_at, doc) VALUES (?, ?, ?, ?)",
                    (endpoint.id, endpoint.clinic_id, ts(endpoint.created_at), dump(endpoint)),
                )
            )
        except sqlite3.IntegrityError:
            raise Conflict("already exists", code="conflict") from None

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = await self._run(
            lambda c: c.execute("SELECT doc FROM webhooks WHERE id = ?", (endpoint_id,)).fetchone()
        )
        return load(WebhookEndpoint, row["doc"]) if row else None

    async def list_webhooks(self, clinic_id: str) -> list[WebhookEndpoint]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM webhooks WHERE clinic_id = ? ORDER BY created_at, id",
                (clinic_id,),
            ).fetchall()
        )
        return [load(WebhookEndpoint, r["doc"]) for r in rows]

    async def delete_webhook(self, endpoint_id: str) -> bool:
        cur = await self._run(
            lambda c: c.execute("DELETE FROM webhooks WHERE id = ?", (endpoint_id,))
        )
        return bool(cur.rowcount == 1)

    # deliveries
    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        def q(c: sqlite3.Connection) -> None:
            for d in deliveries:
                d = replace(d, id=d.id or uuid.uuid4().hex)
                cur = c.execute(
                    "INSERT INTO deliveries (id, endpoint_id, session_id, next_attempt_at,"
                    " delivered_at, doc) VALUES (?, ?, ?, ?, NULL, '')",
                    (
                        d.id,
                        d.endpoint_id,
                        d.event.session_id,
                        ts(d.next_attempt_at or d.event.occurred_at),
                    ),
                )
                seq = int(cur.lastrowid or 0)
                stored = replace(d, seq=seq)
                c.execute("UPDATE deliveries SET doc = ? WHERE seq = ?", (dump(stored), seq))

        await self._run(q)

    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT d.doc FROM deliveries d WHERE d.delivered_at IS NULL"
                " AND d.seq = (SELECT MIN(e.seq) FROM deliveries e WHERE e.delivered_at IS NULL"
                " AND e.endpoint_id = d.endpoint_id AND e.session_id = d.session_id)"
                " AND d.next_attempt_at <= ? ORDER BY d.seq LIMIT ?",
                (ts(now), limit),
            ).fetchall()
        )
        return [load(Delivery, r["doc"]) for r in rows]

    async def _update_delivery(
        self,
        delivery_id: str,
        change: Callable[[Delivery], Delivery],
        delivered_at: datetime | None,
        next_at: datetime | None,
    ) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT doc FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return
            d = change(load(Delivery, row["doc"]))
            c.execute(
                "UPDATE deliveries SET doc = ?, delivered_at = COALESCE(?, delivered_at),"
                " next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
                (dump(d), delivered_at and ts(delivered_at), next_at and ts(next_at), delivery_id),
            )

        await self._run(q)

    async def mark_delivered(self, delivery_id: str, at: datetime) -> None:
        await self._update_delivery(delivery_id, lambda d: replace(d, delivered_at=at), at, None)

    async def mark_failed(
        self, delivery_id: str, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        await self._update_delivery(
            delivery_id,
            lambda d: replace(
                d, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error
            ),
            None,
            next_attempt_at,
        )

    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM deliveries WHERE endpoint_id = ? ORDER BY seq LIMIT ?",
                (endpoint_id, limit),
            ).fetchall()
        )
        return [load(Delivery, r["doc"]) for r in rows]
