"""Access beyond a session's members in the SQLite store: invites (with their use counts),
calendar-feed tokens and trusted contacts. Records are msgspec JSON documents."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime

from broker.errors import Conflict
from broker.scheduling.model import Invite
from broker.store.codec import format_datetime as ts
from broker.store.sqlite_connection import SqliteRunner
from broker.store.sqlite_rows import dump, load


class SqliteAccessMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

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
