"""Logins as token pairs: short-lived access JWTs and rotating, opaque refresh tokens.

Every refresh consumes the presented token and hands out a new one of the same family. A
refresh token that is presented twice means it was copied: the whole family is revoked, so
both the thief and the owner must log in again (OAuth 2.0 Security BCP, section 4.14).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.domain import RefreshToken, User, new_id, utcnow
from broker.errors import TOKEN_REUSED, AuthenticationFailed, InvalidToken
from broker.policy import Principal
from broker.store.base import Store
from broker.tokens import AccessClaims, Tokens, opaque_secret, secret_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    user: User


class Auth:
    def __init__(self, store: Store, tokens: Tokens, refresh_ttl: int) -> None:
        self._store = store
        self._tokens = tokens
        self._refresh_ttl = refresh_ttl

    async def issue_pair(self, user: User, family_id: str | None = None) -> TokenPair:
        now = utcnow()
        access, expires_at = self._tokens.issue_access(user.id, user.role, user.clinic_id, now)
        refresh = opaque_secret()
        await self._store.create_refresh_token(
            RefreshToken(
                token_hash=secret_hash(refresh),
                family_id=family_id or new_id("fam"),
                user_id=user.id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._refresh_ttl),
            )
        )
        return TokenPair(access, expires_at - int(now.timestamp()), refresh, user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = utcnow()
        record = await self._live_refresh(refresh_token, now)
        if not await self._store.mark_refresh_token_used(record.token_hash, now):
            await self._reuse_detected(record, now)
        user = await self._store.get_user(record.user_id)
        if user is None or user.disabled:
            raise InvalidToken("account no longer active")
        return await self.issue_pair(user, record.family_id)

    async def logout(self, refresh_token: str) -> None:
        record = await self._store.get_refresh_token(secret_hash(refresh_token))
        if record is not None:
            await self._store.revoke_refresh_family(record.family_id, utcnow())
            log.info("logged out", extra={"user_id": record.user_id})

    async def _live_refresh(self, token: str, now: datetime) -> RefreshToken:
        record = await self._store.get_refresh_token(secret_hash(token))
        if record is None or record.expires_at <= now:
            raise InvalidToken("refresh token unknown or expired")
        if await self._store.is_refresh_family_revoked(record.family_id):
            raise InvalidToken("refresh token revoked")
        if record.used_at is not None:
            await self._reuse_detected(record, now)
        return record

    async def _reuse_detected(self, record: RefreshToken, now: datetime) -> None:
        await self._store.revoke_refresh_family(record.family_id, now)
        log.warning("refresh token reuse; family revoked", extra={"user_id": record.user_id})
        raise InvalidToken("refresh token was already used; log in again", code=TOKEN_REUSED)

    async def principal_from_access(self, token: str) -> Principal:
        claims: AccessClaims = await self._tokens.verify_access(token)
        return Principal(claims.user_id, claims.role, claims.clinic_id)


def bearer(header: str | None) -> str:
    """The credential of an ``Authorization: Bearer ...`` header."""
    if not header:
        raise AuthenticationFailed("missing Authorization header")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationFailed("Authorization must be 'Bearer <token>'")
    return value.strip()
