"""Request and response bodies of the REST API, as msgspec Structs.

They are parsed at the edge (unknown fields refused) and also generate the OpenAPI schemas, so
the document and the validation never disagree.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from broker.domain import ApiKey, Clinic, User

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, examples=["pat@example.org"])]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
NewPassword = Annotated[str, msgspec.Meta(min_length=10, max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Europe/Berlin"])]
Opaque = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


class RegisterRequest(_In, frozen=True, kw_only=True):
    email: Email
    password: NewPassword
    display_name: Name
    role: Literal["patient", "family"]
    time_zone: TimeZone = "UTC"


class StaffRequest(_In, frozen=True, kw_only=True):
    email: Email
    password: NewPassword
    display_name: Name
    role: Literal["admin", "clinician"]
    time_zone: TimeZone = "UTC"


class LoginRequest(_In, frozen=True, kw_only=True):
    email: Email
    password: Password


class RefreshRequest(_In, frozen=True, kw_only=True):
    refresh_token: Opaque


class ProfileUpdate(_In, frozen=True, kw_only=True):
    display_name: Name | None = None
    email: Email | None = None
    time_zone: TimeZone | None = None
    password: Password | None = None
    current_password: Password | None = None


class ApiKeyRequest(_In, frozen=True, kw_only=True):
    name: Name


class DeviceCodeRequest(_In, frozen=True, kw_only=True):
    client_id: Annotated[str, msgspec.Meta(max_length=64)] = "tv"


class DeviceTokenRequest(_In, frozen=True, kw_only=True):
    grant_type: Literal["urn:ietf:params:oauth:grant-type:device_code"]
    device_code: Opaque
    client_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class DeviceDecision(_In, frozen=True, kw_only=True):
    user_code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    approve: bool


class UserOut(_Out, frozen=True, kw_only=True):
    id: str
    email: str
    display_name: str
    role: str
    clinic_id: str | None
    time_zone: str
    created_at: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=user.role.value,
            clinic_id=user.clinic_id,
            time_zone=user.time_zone,
            created_at=user.created_at.isoformat(),
        )


class UserList(_Out, frozen=True, kw_only=True):
    items: list[UserOut]


class ClinicOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    time_zone: str

    @classmethod
    def of(cls, clinic: Clinic) -> ClinicOut:
        return cls(id=clinic.id, name=clinic.name, time_zone=clinic.time_zone)


class TokenResponse(_Out, frozen=True, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    user: UserOut


class ApiKeyOut(_Out, frozen=True, kw_only=True):
    id: str
    clinic_id: str
    name: str
    created_at: str
    revoked_at: str | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            clinic_id=key.clinic_id,
            name=key.name,
            created_at=key.created_at.isoformat(),
            revoked_at=key.revoked_at.isoformat() if key.revoked_at else None,
        )


class ApiKeyCreated(_Out, frozen=True, kw_only=True):
    key: ApiKeyOut
    secret: str  # the full credential, shown once


class ApiKeyList(_Out, frozen=True, kw_only=True):
    items: list[ApiKeyOut]


class DeviceCodeResponse(_Out, frozen=True, kw_only=True):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class PendingPairingOut(_Out, frozen=True, kw_only=True):
    user_code: str
    client_id: str
    expires_in: int


class Jwk(_Out, frozen=True, kw_only=True):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(_Out, frozen=True, kw_only=True):
    keys: list[Jwk]


class Health(_Out, frozen=True, kw_only=True):
    status: str
    checks: dict[str, str] = {}


class Problem(_Out, frozen=True, kw_only=True):
    """RFC 9457 problem details, with the broker's stable ``code``."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
