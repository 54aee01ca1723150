"""Credentials in the SQLite store: refresh tokens, API keys, device grants, signing keys, and
the login-failure counts that throttle password guessing."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from broker.domain import ApiKey, DeviceGrant, FailureCount, RefreshToken, SigningKey
from broker.errors import Conflict
from broker.store.sqlite_connection import SqliteRunner
from broker.store.sqlite_rows import (
    api_key_from,
    grant_from,
    grant_values,
    iso_text,
    opt_time,
    req_time,
)

_GRANT_INSERT = (
    "INSERT INTO device_grants (device_code_hash, user_code, client_id, created_at, expires_at,"
    " interval, status, user_id, last_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteCredentialsMixin(SqliteRunner):
    """Mixed into ``SqliteStore``; relies on its ``_run`` (one transaction per call)."""

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
                    iso_text(token.created_at),
                    iso_text(token.expires_at),
                    iso_text(token.used_at),
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
            created_at=req_time(row["created_at"]),
            expires_at=req_time(row["expires_at"]),
            used_at=opt_time(row["used_at"]),
        )

    async def mark_refresh_token_used(self, token_hash: str, at: datetime) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                (iso_text(at), token_hash),
            )
        )
        return cur.rowcount == 1

    async def revoke_refresh_family(self, family_id: str, at: datetime) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO revoked_families (family_id, revoked_at) VALUES (?, ?)",
                (family_id, iso_text(at)),
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
                    iso_text(key.created_at),
                    key.created_by,
                    iso_text(key.revoked_at),
                ),
            )
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._run(
            lambda c: c.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        )
        return api_key_from(row) if row else None

    async def list_api_keys(self, clinic_id: str) -> list[ApiKey]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT * FROM api_keys WHERE clinic_id = ? ORDER BY created_at, id", (clinic_id,)
            ).fetchall()
        )
        return [api_key_from(r) for r in rows]

    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (iso_text(at), key_id),
            )
        )
        return cur.rowcount == 1

    # device grants
    async def create_device_grant(self, grant: DeviceGrant) -> None:
        def q(c: sqlite3.Connection) -> None:
            # A user code may be reused once its earlier grant has expired.
            c.execute(
                "DELETE FROM device_grants WHERE user_code = ? AND expires_at < ?",
                (grant.user_code, iso_text(grant.created_at)),
            )
            c.execute(_GRANT_INSERT, grant_values(grant))

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
        return grant_from(row) if row else None

    async def get_device_grant_by_user_code(self, user_code: str) -> DeviceGrant | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM device_grants WHERE user_code = ?", (user_code,)
            ).fetchone()
        )
        return grant_from(row) if row else None

    async def update_device_grant(
        self, grant: DeviceGrant, expected_status: str | None = None
    ) -> bool:
        sql = (
            "UPDATE device_grants SET user_code=?, client_id=?, created_at=?, expires_at=?,"
            " interval=?, status=?, user_id=?, last_poll_at=? WHERE device_code_hash=?"
        )
        values = (*grant_values(grant)[1:], grant.device_code_hash)
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
                (key.kid, key.public_jwk, iso_text(key.created_at), iso_text(key.retire_at)),
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
                created_at=req_time(r["created_at"]),
                retire_at=opt_time(r["retire_at"]),
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
            if row is not None and (at - req_time(row["last_at"])).total_seconds() <= (
                window_seconds
            ):
                count = int(row["count"]) + 1
            c.execute(
                "INSERT INTO login_failures (key, count, last_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET count=excluded.count, last_at=excluded.last_at",
                (key, count, iso_text(at)),
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
        return FailureCount(count=int(row["count"]), last_at=req_time(row["last_at"]))

    async def clear_login_failures(self, key: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM login_failures WHERE key = ?", (key,)))
