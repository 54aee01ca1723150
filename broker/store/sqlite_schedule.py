"""The scheduling half of the SQLite store. Records are msgspec JSON documents, with the
columns that queries filter on beside them (times in fixed-width UTC text, so they sort)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec

from broker.errors import Conflict
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
from broker.store.codec import format_datetime as ts
from broker.store.schedule_base import BookingGuard, SessionQuery

T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

_INACTIVE = (SessionStatus.CANCELLED.value, SessionStatus.NOSHOW.value)


def dump(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def load(kind: type[T], raw: bytes | str) -> T:
    return msgspec.json.decode(raw, type=kind)


class SqliteScheduleMixin:
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

    _run: Run

    # sessions
    async def book_session(
        self,
        candidate: Session,
        guard: BookingGuard,
        window_start: datetime,
        window_end: datetime,
    ) -> Session:
        def q(c: sqlite3.Connection) -> Session:
            members = list(candidate.member_ids)
            marks = ",".join("?" for _ in members) or "NULL"
            rows = c.execute(
                f"SELECT DISTINCT s.doc FROM sessions s LEFT JOIN session_members m"
                f" ON m.session_id = s.id WHERE s.status NOT IN (?, ?)"
                f" AND s.start_at < ? AND s.end_at > ?"
                f" AND (s.site_id = ? OR m.user_id IN ({marks}))",
                (*_INACTIVE, ts(window_end), ts(window_start), candidate.site_id, *members),
            ).fetchall()
            clashing = [load(Session, r["doc"]) for r in rows]
            final = guard([s for s in clashing if s.id != candidate.id])
            _write_session(c, final)
            return final

        result: Session = await self._run(q)
        return result

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._run(
            lambda c: c.execute("SELECT doc FROM sessions WHERE id = ?", (session_id,)).fetchone()
        )
        return load(Session, row["doc"]) if row else None

    async def update_session(self, session: Session, audit: AuditEntry | None = None) -> None:
        def q(c: sqlite3.Connection) -> None:
            _write_session(c, session)
            if audit is not None:
                _append_audit(c, audit)

        await self._run(q)

    async def list_sessions(self, query: SessionQuery) -> list[Session]:
        sql = "SELECT DISTINCT s.doc, s.start_at, s.id FROM sessions s"
        where: list[str] = []
        args: list[Any] = []
        if query.user_id is not None:
            sql += " JOIN session_members m ON m.session_id = s.id"
            where.append("m.user_id = ?")
            args.append(query.user_id)
        for column, op, value in (
            ("s.clinic_id", "=", query.clinic_id),
            ("s.series_id", "=", query.series_id),
            ("s.start_at", ">=", query.starts_from and ts(query.starts_from)),
            ("s.start_at", "<", query.starts_before and ts(query.starts_before)),
            ("s.end_at", "<", query.ends_before and ts(query.ends_before)),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if query.statuses:
            where.append(f"s.status IN ({','.join('?' for _ in query.statuses)})")
            args.extend(s.value for s in query.statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.start_at, s.id LIMIT ?"
        args.append(query.limit)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [load(Session, r["doc"]) for r in rows]

    # availability and sites
    async def put_availability(self, availability: Availability) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO availability (clinician_id, clinic_id, doc) VALUES (?, ?, ?)"
                " ON CONFLICT(clinician_id) DO UPDATE SET clinic_id=excluded.clinic_id,"
                " doc=excluded.doc",
                (availability.clinician_id, availability.clinic_id, dump(availability)),
            )
        )

    async def get_availability(self, clinician_id: str) -> Availability | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM availability WHERE clinician_id = ?", (clinician_id,)
            ).fetchone()
        )
        return load(Availability, row["doc"]) if row else None

    async def list_availability(self, clinic_id: str) -> list[Availability]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM availability WHERE clinic_id = ? ORDER BY clinician_id",
                (clinic_id,),
            ).fetchall()
        )
        return [load(Availability, r["doc"]) for r in rows]

    async def put_site(self, site: Site) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO sites (id, doc) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET doc=excluded.doc",
                (site.id, dump(site)),
            )
        )

    async def get_site(self, site_id: str) -> Site | None:
        row = await self._run(
            lambda c: c.execute("SELECT doc FROM sites WHERE id = ?", (site_id,)).fetchone()
        )
        return load(Site, row["doc"]) if row else None

    # invites
    async def create_invite(self, invite: Invite) -> None:
        try:
            await self._run(
                lambda c: c.execute(
                    "INSERT INTO invites (id, session_id, token_hash, created_at, doc)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        invite.id,
                        invite.session_id,
                        invite.token_hash,
                        ts(invite.created_at),
                        dump(invite),
                    ),
                )
            )
        except sqlite3.IntegrityError:
            raise Conflict("already exists", code="conflict") from None

    async def get_invite(self, invite_id: str) -> Invite | None:
        return await self._one_invite("id", invite_id)

    async def get_invite_by_token(self, token_hash: str) -> Invite | None:
        return await self._one_invite("token_hash", token_hash)

    async def _one_invite(self, column: str, value: str) -> Invite | None:
        row = await self._run(
            lambda c: c.execute(f"SELECT doc FROM invites WHERE {column} = ?", (value,)).fetchone()
        )
        return load(Invite, row["doc"]) if row else None

    async def list_invites(self, session_id: str) -> list[Invite]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM invites WHERE session_id = ? ORDER BY created_at, id",
                (session_id,),
            ).fetchall()
        )
        return [load(Invite, r["doc"]) for r in rows]

    async def use_invite(self, invite_id: str, at: datetime) -> Invite | None:
        def q(c: sqlite3.Connection) -> Invite | None:
            row = c.execute("SELECT doc FROM invites WHERE id = ?", (invite_id,)).fetchone()
            if row is None:
                return None
            invite = load(Invite, row["doc"])
            if invite.revoked_at is not None or invite.expires_at <= at:
                return None
            if invite.uses >= invite.max_uses:
                return None
            used = replace(invite, uses=invite.uses + 1)
            c.execute("UPDATE invites SET doc = ? WHERE id = ?", (dump(used), invite_id))
            return used

        result: Invite | None = await self._run(q)
        return result

    async def revoke_invite(self, invite_id: str, at: datetime) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT doc FROM invites WHERE id = ?", (invite_id,)).fetchone()
            if row is None:
                return False
            invite = load(Invite, row["doc"])
            if invite.revoked_at is not None:
                return False
            c.execute(
                "UPDATE invites SET doc = ? WHERE id = ?",
                (dump(replace(invite, revoked_at=at)), invite_id),
            )
            return True

        result: bool = await self._run(q)
        return result

    # calendar feeds
    async def set_feed_token(self, user_id: str, token_hash: str) -> None:
        try:
            await self._run(
                lambda c: c.execute(
                    "INSERT INTO feed_tokens (user_id, token_hash) VALUES (?, ?)"
                    " ON CONFLICT(user_id) DO UPDATE SET token_hash=excluded.token_hash",
                    (user_id, token_hash),
                )
            )
        except sqlite3.IntegrityError:
            raise Conflict("already exists", code="conflict") from None

    async def get_feed_user(self, token_hash: str) -> str | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT user_id FROM feed_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        )
        return str(row["user_id"]) if row else None

    # trusted contacts
    async def set_trusted_contacts(self, user_id: str, contacts: tuple[str, ...]) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO trusted_contacts (user_id, doc) VALUES (?, ?)"
                " ON CONFLICT(user_id) DO UPDATE SET doc=excluded.doc",
                (user_id, dump(list(contacts))),
            )
        )

    async def get_trusted_contacts(self, user_id: str) -> tuple[str, ...]:
        row = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM trusted_contacts WHERE user_id = ?", (user_id,)
            ).fetchone()
        )
        return tuple(load(list[str], row["doc"])) if row else ()

    # webhooks and outbox
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

    # audit
    async def append_audit(self, entry: AuditEntry) -> None:
        await self._run(lambda c: _append_audit(c, entry))

    async def list_audit(self, session_id: str) -> list[AuditEntry]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM audit WHERE session_id = ? ORDER BY seq", (session_id,)
            ).fetchall()
        )
        return [load(AuditEntry, r["doc"]) for r in rows]

    # coordination
    async def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            now = datetime.now().astimezone()
            until = ts(now + timedelta(seconds=ttl_seconds))
            cur = c.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, until=excluded.until"
                " WHERE leases.holder = excluded.holder OR leases.until < ?",
                (name, holder, until, ts(now)),
            )
            return cur.rowcount == 1

        result: bool = await self._run(q)
        return result

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            now = datetime.now().astimezone()
            c.execute("DELETE FROM once_marks WHERE key = ? AND until < ?", (key, ts(now)))
            cur = c.execute(
                "INSERT OR IGNORE INTO once_marks (key, until) VALUES (?, ?)",
                (key, ts(now + timedelta(seconds=ttl_seconds))),
            )
            return cur.rowcount == 1

        result: bool = await self._run(q)
        return result


def _append_audit(c: sqlite3.Connection, entry: AuditEntry) -> None:
    c.execute(
        "INSERT INTO audit (session_id, at, doc) VALUES (?, ?, ?)",
        (entry.session_id, ts(entry.at), dump(entry)),
    )


def _write_session(c: sqlite3.Connection, s: Session) -> None:
    c.execute(
        "INSERT INTO sessions (id, start_at, end_at, site_id, clinic_id, status, series_id, doc)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
        " start_at=excluded.start_at, end_at=excluded.end_at, site_id=excluded.site_id,"
        " clinic_id=excluded.clinic_id, status=excluded.status, series_id=excluded.series_id,"
        " doc=excluded.doc",
        (
            s.id,
            ts(s.start),
            ts(s.end),
            s.site_id,
            s.clinic_id,
            s.status.value,
            s.series_id,
            dump(s),
        ),
    )
    c.execute("DELETE FROM session_members WHERE session_id = ?", (s.id,))
    c.executemany(
        "INSERT OR IGNORE INTO session_members (session_id, user_id) VALUES (?, ?)",
        [(s.id, uid) for uid in s.member_ids],
    )
