"""The ``Store`` protocol: the one seam between services and persistence.

Two backends implement it: ``SqliteStore`` (embedded default) and ``RedisStore`` (many nodes).
Both pass the same contract suite in ``tests/store/test_contract.py``. Methods take and return
the frozen value types of ``broker.domain``; a backend never applies business rules beyond the
atomic primitives named here (unique e-mail, compare-and-set on a refresh token, single
consumption of a device grant).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from broker.domain import (
    ApiKey,
    Clinic,
    DeviceGrant,
    FailureCount,
    RefreshToken,
    SigningKey,
    User,
)
from broker.errors import Conflict, StoreError
from broker.store.schedule_base import ScheduleStore

__all__ = ["DuplicateEmail", "Store", "StoreError", "StoreUnavailable"]


class DuplicateEmail(Conflict):
    code = "email_taken"


class StoreUnavailable(StoreError):
    """The backing database cannot be reached."""


@runtime_checkable
class Store(ScheduleStore, Protocol):
    """Persistence for accounts and credentials; scheduling comes from ``ScheduleStore``."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the backend cannot be reached."""

    async def close(self) -> None: ...

    # clinics
    async def create_clinic(self, clinic: Clinic) -> None: ...
    async def get_clinic(self, clinic_id: str) -> Clinic | None: ...
    async def find_clinic_by_name(self, name: str) -> Clinic | None: ...

    # users
    async def create_user(self, user: User) -> None:
        """Insert; raise ``DuplicateEmail`` when the (lower-cased) e-mail is taken."""

    async def get_user(self, user_id: str) -> User | None: ...
    async def get_user_by_email(self, email: str) -> User | None: ...

    async def update_user(self, user: User) -> None:
        """Replace the stored user with the same id (the e-mail may change: stays unique)."""

    async def list_clinic_users(self, clinic_id: str) -> list[User]:
        """Staff of one clinic, ordered by creation time."""

    # refresh tokens
    async def create_refresh_token(self, token: RefreshToken) -> None: ...
    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None: ...

    async def mark_refresh_token_used(self, token_hash: str, at: datetime) -> bool:
        """Set ``used_at`` if still unused. True for exactly one of any concurrent callers."""

    async def revoke_refresh_family(self, family_id: str, at: datetime) -> None: ...
    async def is_refresh_family_revoked(self, family_id: str) -> bool: ...

    # API keys
    async def create_api_key(self, key: ApiKey) -> None: ...
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...
    async def list_api_keys(self, clinic_id: str) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        """True when the key existed and was not revoked before."""

    # RFC 8628 device grants
    async def create_device_grant(self, grant: DeviceGrant) -> None:
        """Raise ``Conflict`` when the user code is already in use by a live grant."""

    async def get_device_grant(self, device_code_hash: str) -> DeviceGrant | None: ...
    async def get_device_grant_by_user_code(self, user_code: str) -> DeviceGrant | None: ...

    async def update_device_grant(
        self, grant: DeviceGrant, expected_status: str | None = None
    ) -> bool:
        """Replace the grant; with ``expected_status`` only if the stored status still matches.

        True when written. This is how approval and consumption stay single across nodes.
        """

    # signing keys (public halves, shared by all nodes)
    async def put_signing_key(self, key: SigningKey) -> None:
        """Insert or replace by ``kid``."""

    async def list_signing_keys(self) -> list[SigningKey]: ...

    # login throttling
    async def record_login_failure(
        self, key: str, at: datetime, window_seconds: int
    ) -> FailureCount:
        """Count one failure for ``key``; counts older than the window start again from one."""

    async def get_login_failures(self, key: str) -> FailureCount | None: ...
    async def clear_login_failures(self, key: str) -> None: ...
