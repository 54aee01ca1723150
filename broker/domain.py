"""Pure value types of the broker. No I/O here; times are aware UTC datetimes."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Opaque, unguessable, URL-safe id with a readable type prefix (``usr_...``)."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


class Role(enum.StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"
    PATIENT = "patient"
    FAMILY = "family"
    GUEST = "guest"

    @property
    def is_staff(self) -> bool:
        return self in (Role.ADMIN, Role.CLINICIAN)


@dataclass(frozen=True, slots=True)
class Clinic:
    id: str
    name: str
    time_zone: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    display_name: str
    role: Role
    password_hash: str
    created_at: datetime
    updated_at: datetime
    clinic_id: str | None = None
    time_zone: str = "UTC"
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """One link of a refresh-token family. Only the SHA-256 of the token is stored."""

    token_hash: str
    family_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A clinic system's credential. ``secret_hash`` is SHA-256 of a 256-bit random secret."""

    id: str
    clinic_id: str
    name: str
    secret_hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


class DeviceGrantStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CONSUMED = "consumed"


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    """RFC 8628 device authorization: a TV's pending pairing."""

    device_code_hash: str
    user_code: str
    client_id: str
    created_at: datetime
    expires_at: datetime
    interval: int
    status: DeviceGrantStatus = DeviceGrantStatus.PENDING
    user_id: str | None = None
    last_poll_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A published public key. ``retire_at`` is set when a newer key takes over."""

    kid: str
    public_jwk: str  # JSON text of the public JWK
    created_at: datetime
    retire_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FailureCount:
    """Recent failed logins for one throttle key (an account or a client address)."""

    count: int
    last_at: datetime
