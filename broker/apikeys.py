"""API keys for clinic systems (an EHR creating visits): ``cck_<key-id>.<secret>``.

The secret is shown once at creation; only its SHA-256 is stored. A key acts for one clinic.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from broker import policy
from broker.domain import ApiKey, new_id, utcnow
from broker.errors import AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.store.base import Store
from broker.tokens import opaque_secret, secret_hash

log = logging.getLogger(__name__)

PREFIX = "cck_"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    token: str  # the full credential, shown once


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


class ApiKeys:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, clinic_id: str, name: str, created_by: str) -> IssuedKey:
        if not name.strip():
            raise InvalidInput("name is empty", field="name")
        if await self._store.get_clinic(clinic_id) is None:
            raise NotFound("no such clinic")
        secret = opaque_secret()
        key = ApiKey(
            id=new_id("key"),
            clinic_id=clinic_id,
            name=name.strip(),
            secret_hash=secret_hash(secret),
            created_at=utcnow(),
            created_by=created_by,
        )
        await self._store.create_api_key(key)
        log.info("api key created", extra={"key_id": key.id, "clinic_id": clinic_id})
        return IssuedKey(key, f"{PREFIX}{key.id}.{secret}")

    async def create_for(self, by: Principal, clinic_id: str, name: str) -> IssuedKey:
        if not policy.can_manage_api_keys(by, clinic_id):
            raise PermissionDenied("only the clinic's admins manage API keys")
        return await self.create(clinic_id, name, by.subject)

    async def list_for(self, by: Principal, clinic_id: str) -> list[ApiKey]:
        if not policy.can_manage_api_keys(by, clinic_id):
            raise PermissionDenied("only the clinic's admins manage API keys")
        return await self._store.list_api_keys(clinic_id)

    async def revoke_for(self, by: Principal, clinic_id: str, key_id: str) -> None:
        if not policy.can_manage_api_keys(by, clinic_id):
            raise PermissionDenied("only the clinic's admins manage API keys")
        key = await self._store.get_api_key(key_id)
        if key is None or key.clinic_id != clinic_id:
            raise NotFound("no such API key")
        await self._store.revoke_api_key(key_id, utcnow())
        log.info("api key revoked", extra={"key_id": key_id, "clinic_id": clinic_id})

    async def authenticate(self, credential: str) -> Principal:
        body = credential[len(PREFIX) :]
        key_id, _, secret = body.partition(".")
        key = await self._store.get_api_key(key_id) if key_id and secret else None
        expected = key.secret_hash if key is not None else secret_hash("")
        matches = hmac.compare_digest(expected, secret_hash(secret))
        if key is None or not matches or key.revoked_at is not None:
            raise AuthenticationFailed("API key unknown or revoked", code="invalid_api_key")
        return Principal(key.id, None, key.clinic_id, api_key=True)
