"""Coordination between nodes in the SQLite store: named leases (one holder at a time) and
once-marks (true exactly once per key until they expire)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from broker.store.codec import format_datetime as ts
from broker.store.sqlite_connection import SqliteRunner


class SqliteCoordinationMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

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
