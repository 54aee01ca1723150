"""The schedule in the SQLite store: sessions (with the atomic booking), availability, sites
and each session's audit trail. Records are msgspec JSON documents, with the columns that
queries filter on beside them (times in fixed-width UTC text, so they sort)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from broker.scheduling.model import AuditEntry, Availability, Session, SessionStatus, Site
from broker.store.codec import format_datetime as ts
from broker.store.schedule_base import BookingGuard, SessionQuery
from broker.store.sqlite_connection import SqliteRunner
from broker.store.sqlite_rows import dump, load

_INACTIVE = (SessionStatus.CANCELLED.value, SessionStatus.NOSHOW.value)


class SqliteScheduleMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

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
