"""Accounts in the SQLite store: clinics and users."""

from __future__ import annotations

import sqlite3

from broker.domain import Clinic, User
from broker.errors import Conflict
from broker.store.base import DuplicateEmail
from broker.store.sqlite_connection import SqliteRunner
from broker.store.sqlite_rows import clinic_from, iso_text, user_from, user_values

_USER_INSERT = (
    "INSERT INTO users (id, email, display_name, role, password_hash, created_at, updated_at,"
    " clinic_id, time_zone, disabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteAccountsMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

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
                    iso_text(clinic.created_at),
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
        return clinic_from(row) if row else None

    async def find_clinic_by_name(self, name: str) -> Clinic | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM clinics WHERE name_key = ? ORDER BY created_at LIMIT 1",
                (name.lower(),),
            ).fetchone()
        )
        return clinic_from(row) if row else None

    # users
    async def create_user(self, user: User) -> None:
        try:
            await self._run(lambda c: c.execute(_USER_INSERT, user_values(user)))
        except sqlite3.IntegrityError:
            raise DuplicateEmail("e-mail already registered") from None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        )
        return user_from(row) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
        )
        return user_from(row) if row else None

    async def update_user(self, user: User) -> None:
        def q(c: sqlite3.Connection) -> None:
            values = user_values(user)
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
        return [user_from(r) for r in rows]
