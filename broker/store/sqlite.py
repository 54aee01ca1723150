"""Embedded default store: one SQLite file in the data dir, WAL mode, versioned migrations.

All SQL runs on one dedicated thread (a single-worker executor) that owns the connection, so
the event loop never blocks on disk and statements never interleave.

``SqliteStore`` owns that thread and composes the store from mixins, one per concern:
``sqlite_accounts`` (clinics, users), ``sqlite_credentials`` (tokens, keys, grants, login
throttling), ``sqlite_schedule`` (sessions, availability, sites, audit), ``sqlite_access``
(invites, feed tokens, trusted contacts), ``sqlite_outbox`` (webhooks, deliveries) and
``sqlite_coordination`` (leases, once-marks). Opening the file and the migrations are in
``sqlite_connection``; the row mappers in ``sqlite_rows``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from broker.store.base import StoreUnavailable
from broker.store.sqlite_access import SqliteAccessMixin
from broker.store.sqlite_accounts import SqliteAccountsMixin
from broker.store.sqlite_connection import connect, in_tx, migrate
from broker.store.sqlite_coordination import SqliteCoordinationMixin
from broker.store.sqlite_credentials import SqliteCredentialsMixin
from broker.store.sqlite_outbox import SqliteOutboxMixin
from broker.store.sqlite_schedule import SqliteScheduleMixin

__all__ = ["SqliteStore", "migrate"]

T = TypeVar("T")


class SqliteStore(
    SqliteAccountsMixin,
    SqliteCredentialsMixin,
    SqliteScheduleMixin,
    SqliteAccessMixin,
    SqliteOutboxMixin,
    SqliteCoordinationMixin,
):
    """``Store`` on SQLite. Open with ``await SqliteStore.open(path)``."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(executor, connect, Path(path))
        return cls(conn, executor)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, in_tx, self._conn, fn)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)
