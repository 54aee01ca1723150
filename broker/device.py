"""TV pairing: the OAuth 2.0 Device Authorization Grant (RFC 8628).

The TV asks for a device code and shows the short user code; a person approves it from a
logged-in phone; the TV polls the token endpoint and receives a token pair for that person.
Only hashes of device codes are stored. Approval and consumption are compare-and-set on the
grant's status, so they happen once even with many broker nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from broker import policy
from broker.auth import Auth, TokenPair
from broker.domain import DeviceGrant, DeviceGrantStatus, utcnow
from broker.errors import (
    ACCESS_DENIED,
    AUTHORIZATION_PENDING,
    EXPIRED_TOKEN,
    SLOW_DOWN,
    Conflict,
    DeviceFlowError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from broker.policy import Principal
from broker.store.base import Store
from broker.tokens import opaque_secret, secret_hash

log = logging.getLogger(__name__)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5  # RFC 8628 section 3.5: the interval grows by 5 seconds
MAX_CLIENT_ID = 64


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    device_code: str
    user_code: str  # formatted for display: XXXX-XXXX
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class PendingPairing:
    user_code: str
    client_id: str
    expires_in: int


class DeviceFlow:
    def __init__(self, store: Store, auth: Auth, ttl: int, interval: int) -> None:
        self._store = store
        self._auth = auth
        self._ttl = ttl
        self._interval = interval

    async def start(self, client_id: str) -> DeviceAuthorization:
        client_id = client_id.strip() or "tv"
        if len(client_id) > MAX_CLIENT_ID:
            raise InvalidInput(f"client_id longer than {MAX_CLIENT_ID}", field="client_id")
        device_code = opaque_secret()
        now = utcnow()
        for _ in range(5):
            grant = DeviceGrant(
                device_code_hash=secret_hash(device_code),
                user_code=policy.new_user_code(),
                client_id=client_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._ttl),
                interval=self._interval,
            )
            try:
                await self._store.create_device_grant(grant)
            except Conflict:
                continue  # user code collision: draw another
            return DeviceAuthorization(
                device_code, policy.format_user_code(grant.user_code), self._ttl, self._interval
            )
        raise Conflict("could not allocate a pairing code; try again", code="busy")

    async def _live_by_user_code(self, user_code: str) -> DeviceGrant:
        code = policy.normalize_user_code(user_code)
        grant = await self._store.get_device_grant_by_user_code(code) if code else None
        if grant is None or grant.expires_at <= utcnow():
            raise NotFound("no pending pairing with this code", code="invalid_user_code")
        return grant

    async def describe(self, user_code: str) -> PendingPairing:
        grant = await self._live_by_user_code(user_code)
        if grant.status is not DeviceGrantStatus.PENDING:
            raise NotFound("no pending pairing with this code", code="invalid_user_code")
        left = int((grant.expires_at - utcnow()).total_seconds())
        return PendingPairing(policy.format_user_code(grant.user_code), grant.client_id, left)

    async def decide(self, by: Principal, user_code: str, approve: bool) -> None:
        if not policy.can_pair_device(by):
            raise PermissionDenied("this account cannot pair devices")
        grant = await self._live_by_user_code(user_code)
        status = DeviceGrantStatus.APPROVED if approve else DeviceGrantStatus.DENIED
        decided = replace(grant, status=status, user_id=by.subject)
        if not await self._store.update_device_grant(decided, DeviceGrantStatus.PENDING.value):
            raise Conflict("this pairing was already decided", code="already_decided")
        log.info(
            "device pairing decided",
            extra={"user_id": by.subject, "approved": approve, "client_id": grant.client_id},
        )

    async def poll(self, device_code: str) -> TokenPair:
        """The token endpoint: a token pair, or a ``DeviceFlowError`` with the RFC's code."""
        now = utcnow()
        grant = await self._store.get_device_grant(secret_hash(device_code))
        if grant is None or grant.status is DeviceGrantStatus.CONSUMED:
            raise DeviceFlowError("unknown or used device code", code="invalid_grant")
        if grant.expires_at <= now:
            raise DeviceFlowError("the pairing code expired", code=EXPIRED_TOKEN)
        if grant.status is DeviceGrantStatus.DENIED:
            raise DeviceFlowError("the pairing was denied", code=ACCESS_DENIED)
        if grant.status is DeviceGrantStatus.PENDING:
            too_soon = grant.last_poll_at is not None and (
                (now - grant.last_poll_at).total_seconds() < grant.interval
            )
            interval = grant.interval + SLOW_DOWN_STEP if too_soon else grant.interval
            polled = replace(grant, last_poll_at=now, interval=interval)
            if await self._store.update_device_grant(polled, DeviceGrantStatus.PENDING.value):
                if too_soon:
                    raise DeviceFlowError("polling too fast", code=SLOW_DOWN, interval=interval)
                raise DeviceFlowError("waiting for approval", code=AUTHORIZATION_PENDING)
            return await self.poll(device_code)  # decided meanwhile: answer with that
        consumed = replace(grant, status=DeviceGrantStatus.CONSUMED)
        if not await self._store.update_device_grant(consumed, DeviceGrantStatus.APPROVED.value):
            raise DeviceFlowError("unknown or used device code", code="invalid_grant")
        assert grant.user_id is not None
        user = await self._store.get_user(grant.user_id)
        if user is None or user.disabled:
            raise DeviceFlowError("the approving account is gone", code=ACCESS_DENIED)
        log.info("device paired", extra={"user_id": user.id, "client_id": grant.client_id})
        return await self._auth.issue_pair(user)
