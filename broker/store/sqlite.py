"""Embedded default store: one SQLite file in the data dir, WAL mode, versioned migrations.

All SQL runs on one dedicated thread (a single-worker executor) that owns the connection, so
the event loop never blocks on disk and statements never interleave.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from broker.domain import (
    ApiKey,
    Clinic,
    DeviceGrant,
    DeviceGrantStatus,
    FailureCount,
    RefreshToken,
    Role,
    SigningKey,
    User,
)
from broker.errors import Conflict
from broker.store.base import DuplicateEmail, StoreUnavailable
from broker.store.migrations import MIGRATIONS
from broker.store.sqlite_schedule import SqliteScheduleMixin

T = TypeVar("T")


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _req_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SqliteStore(SqliteScheduleMixin):
    """``Store`` on SQLite. Open with ``await SqliteStore.open(path)``."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(executor, _connect, Path(path))
        return cls(conn, executor)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _in_tx, self._conn, fn)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)

    # clinics
    async def create_clinic(self, clinic: Clinic) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO clinics (id, name, name_key, time_zone, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    clinic.id,
                    clinic.name,
                    clinic.name.lower(),
                    clinic.time_zone,
                    _ts(clinic.created_at),
                ),
            )

        try:
            await self._run(q)
        except sqlite3.IntegrityError:
            raise Conflict(f"clinic {clinic.id} exists", code="clinic_exists") from None

    async def get_clinic(self, clinic_id: str) -> Clinic | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM clinics WHERE id = ?", (clinic_id,)).fetchone()
        )
        return _clinic(row) if row else None

    async def find_clinic_by_name(self, name: str) -> Clinic | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM clinics WHERE name_key = ? ORDER BY created_at LIMIT 1",
                (name.lower(),),
            ).fetchone()
        )
        return _clinic(row) if row else None

    # users
    async def create_user(self, user: User) -> None:
        try:
            await self._run(lambda c: c.execute(_USER_INSERT, _user_row(user)))
        except sqlite3.IntegrityError:
            raise DuplicateEmail("e-mail already registered") from None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        )
        return _user(row) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
        )
        return _user(row) if row else None

    async def update_user(self, user: User) -> None:
        def q(c: sqlite3.Connection) -> None:
            values = _user_row(user)
            c.execute(
                "UPDATE users SET email=?, display_name=?, role=?, password_hash=?,"
                " created_at=?, updated_at=?, clinic_id=?, time_zone=?, disabled=? WHERE id=?",
                (*values[1:], values[0]),
            )

        try:
            await self._run(q)
        except sqlite3.IntegrityError:
            raise DuplicateEmail("e-mail already registered") from None

    async def list_clinic_users(self, clinic_id: str) -> list[User]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT * FROM users WHERE clinic_id = ? ORDER BY created_at, id", (clinic_id,)
            ).fetchall()
        )
        return [_user(r) for r in rows]

    # refresh tokens
    async def create_refresh_token(self, token: RefreshToken) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at,"
                " expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    token.token_hash,
                    token.family_id,
                    token.user_id,
                    _ts(token.created_at),
                    _ts(token.expires_at),
                    _ts(token.used_at),
                ),
            )
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM refresh_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        )
        if row is None:
            return None
        return RefreshToken(
            token_hash=row["token_hash"],
            family_id=row["family_id"],
            user_id=row["user_id"],
            created_at=_req_dt(row["created_at"]),
            expires_at=_req_dt(row["expires_at"]),
            used_at=_dt(row["used_at"]),
        )

    async def mark_refresh_token_used(self, token_hash: str, at: datetime) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                (_ts(at), token_hash),
            )
        )
        return cur.rowcount == 1

    async def revoke_refresh_family(self, family_id: str, at: datetime) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO revoked_families (family_id, revoked_at) VALUES (?, ?)",
                (family_id, _ts(at)),
            )
        )

    async def is_refresh_family_revoked(self, family_id: str) -> bool:
        row = await self._run(
            lambda c: c.execute(
                "SELECT 1 FROM revoked_families WHERE family_id = ?", (family_id,)
            ).fetchone()
        )
        return row is not None

    # API keys
    async def create_api_key(self, key: ApiKey) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO api_keys (id, clinic_id, name, secret_hash, created_at, created_by,"
                " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.clinic_id,
                    key.name,
                    key.secret_hash,
                    _ts(key.created_at),
                    key.created_by,
                    _ts(key.revoked_at),
                ),
            )
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        )
        return _api_key(row) if row else None

    async def list_api_keys(self, clinic_id: str) -> list[ApiKey]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT * FROM api_keys WHERE clinic_id = ? ORDER BY created_at, id", (clinic_id,)
            ).fetchall()
        )
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_ts(at), key_id),
            )
        )
        return cur.rowcount == 1

    # device grants
    async def create_device_grant(self, grant: DeviceGrant) -> None:
        def q(c: sqlite3.Connection) -> None:
            # A user code may be reused once its earlier grant has expired.
            c.execute(
                "DELETE FROM device_grants WHERE user_code = ? AND expires_at < ?",
                (grant.user_code, _ts(grant.created_at)),
            )
            c.execute(_GRANT_INSERT, _grant_row(grant))

        try:
            await self._run(q)
        except sqlite3.IntegrityError:
            raise Conflict("user code in use", code="user_code_taken") from None

    async def get_device_grant(self, device_code_hash: str) -> DeviceGrant | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM device_grants WHERE device_code_hash = ?", (device_code_hash,)
            ).fetchone()
        )
        return _grant(row) if row else None

    async def get_device_grant_by_user_code(self, user_code: str) -> DeviceGrant | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM device_grants WHERE user_code = ?", (user_code,)
            ).fetchone()
        )
        return _grant(row) if row else None

    async def update_device_grant(
        self, grant: DeviceGrant, expected_status: str | None = None
    ) -> bool:
        sql = (
            "UPDATE device_grants SET user_code=?, client_id=?, created_at=?, expires_at=?,"
            " interval=?, status=?, user_id=?, last_poll_at=? WHERE device_code_hash=?"
        )
        values = (*_grant_row(grant)[1:], grant.device_code_hash)
        if expected_status is not None:
            sql += " AND status=?"
            values = (*values, expected_status)
        cur = await self._run(lambda c: c.execute(sql, values))
        return cur.rowcount == 1

    # signing keys
    async def put_signing_key(self, key: SigningKey) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO signing_keys (kid, public_jwk, created_at, retire_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(kid) DO UPDATE SET"
                " public_jwk=excluded.public_jwk, created_at=excluded.created_at,"
                " retire_at=excluded.retire_at",
                (key.kid, key.public_jwk, _ts(key.created_at), _ts(key.retire_at)),
            )
        )

    async def list_signing_keys(self) -> list[SigningKey]:
        rows = await self._run(
            lambda c: c.execute("SELECT * FROM signing_keys ORDER BY created_at, kid").fetchall()
        )
        return [
            SigningKey(
                kid=r["kid"],
                public_jwk=r["public_jwk"],
                created_at=_req_dt(r["created_at"]),
                retire_at=_dt(r["retire_at"]),
            )
            for r in rows
        ]

    # login throttling
    async def record_login_failure(
        self, key: str, at: datetime, window_seconds: int
    ) -> FailureCount:
        def q(c: sqlite3.Connection) -> FailureCount:
            row = c.execute(
                "SELECT count, last_at FROM login_failures WHERE key = ?", (key,)
            ).fetchone()
            count = 1
            if row is not None and (at - _req_dt(row["last_at"])).total_seconds() <= (
                window_seconds
            ):
                count = int(row["count"]) + 1
            c.execute(
                "INSERT INTO login_failures (key, count, last_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET count=excluded.count, last_at=excluded.last_at",
                (key, count, _ts(at)),
            )
            return FailureCount(count=count, last_at=at)

        return await self._run(q)

    async def get_login_failures(self, key: str) -> FailureCount | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT count, last_at FROM login_failures WHERE key = ?", (key,)
            ).fetchone()
        )
        if row is None:
            return None
        return FailureCount(count=int(row["count"]), last_at=_req_dt(row["last_at"]))

    async def clear_login_failures(self, key: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM login_failures WHERE key = ?", (key,)))


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than ``PRAGMA user_version``; return the new version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version


def _in_tx(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: {exc}") from exc
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


_USER_INSERT = (
    "INSERT INTO users (id, email, display_name, role, password_hash, created_at, updated_at,"
    " clinic_id, time_zone, disabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _user_row(u: User) -> tuple[Any, ...]:
    return (
        u.id,
        u.email,
        u.display_name,
        u.role.value,
        u.password_hash,
        _ts(u.created_at),
        _ts(u.updated_at),
        u.clinic_id,
        u.time_zone,
        int(u.disabled),
    )


def _user(r: sqlite3.Row) -> User:
    return User(
        id=r["id"],
        email=r["email"],
        display_name=r["display_name"],
        role=Role(r["role"]),
        password_hash=r["password_hash"],
        created_at=_req_dt(r["created_at"]),
        updated_at=_req_dt(r["updated_at"]),
        clinic_id=r["clinic_id"],
        time_zone=r["time_zone"],
        disabled=bool(r["disabled"]),
    )


def _clinic(r: sqlite3.Row) -> Clinic:
    return Clinic(
        id=r["id"],
        name=r["name"],
        time_zone=r["time_zone"],
        created_at=_req_dt(r["created_at"]),
    )


def _api_key(r: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=r["id"],
        clinic_id=r["clinic_id"],
        name=r["name"],
        secret_hash=r["secret_hash"],
        created_at=_req_dt(r["created_at"]),
        created_by=r["created_by"],
        revoked_at=_dt(r["revoked_at"]),
    )


_GRANT_INSERT = (
    "INSERT INTO device_grants (device_code_hash, user_code, client_id, created_at, expires_at,"
    " interval, status, user_id, last_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _grant_row(g: DeviceGrant) -> tuple[Any, ...]:
    return (
        g.device_code_hash,
        g.user_code,
        g.client_id,
        _ts(g.created_at),
        _ts(g.expires_at),
        g.interval,
        g.status.value,
        g.user_id,
        _ts(g.last_poll_at),
    )


def _grant(r: sqlite3.Row) -> DeviceGrant:
    return DeviceGrant(
        device_code_hash=r["device_code_hash"],
        user_code=r["user_code"],
        client_id=r["client_id"],
        created_at=_req_dt(r["created_at"]),
        expires_at=_req_dt(r["expires_at"]),
        interval=int(r["interval"]),
        status=DeviceGrantStatus(r["status"]),
        user_id=r["user_id"],
        last_poll_at=_dt(r["last_poll_at"]),
    )
