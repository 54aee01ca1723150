"""Row mapping for the SQLite store: times as text, msgspec JSON documents (the scheduling
records' ``doc`` columns), and the account records to and from their rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from broker.domain import ApiKey, Clinic, DeviceGrant, DeviceGrantStatus, Role, User

T = TypeVar("T")


def iso_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def opt_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def req_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def dump(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def load(kind: type[T], raw: bytes | str) -> T:
    return msgspec.json.decode(raw, type=kind)


def user_values(u: User) -> tuple[Any, ...]:
    return (
        u.id,
        u.email,
        u.display_name,
        u.role.value,
        u.password_hash,
        iso_text(u.created_at),
        iso_text(u.updated_at),
        u.clinic_id,
        u.time_zone,
        int(u.disabled),
    )


def user_from(r: sqlite3.Row) -> User:
    return User(
        id=r["id"],
        email=r["email"],
        display_name=r["display_name"],
        role=Role(r["role"]),
        password_hash=r["password_hash"],
        created_at=req_time(r["created_at"]),
        updated_at=req_time(r["updated_at"]),
        clinic_id=r["clinic_id"],
        time_zone=r["time_zone"],
        disabled=bool(r["disabled"]),
    )


def clinic_from(r: sqlite3.Row) -> Clinic:
    return Clinic(
        id=r["id"],
        name=r["name"],
        time_zone=r["time_zone"],
        created_at=req_time(r["created_at"]),
    )


def api_key_from(r: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=r["id"],
        clinic_id=r["clinic_id"],
        name=r["name"],
        secret_hash=r["secret_hash"],
        created_at=req_time(r["created_at"]),
        created_by=r["created_by"],
        revoked_at=opt_time(r["revoked_at"]),
    )


def grant_values(g: DeviceGrant) -> tuple[Any, ...]:
    return (
        g.device_code_hash,
        g.user_code,
        g.client_id,
        iso_text(g.created_at),
        iso_text(g.expires_at),
        g.interval,
        g.status.value,
        g.user_id,
        iso_text(g.last_poll_at),
    )


def grant_from(r: sqlite3.Row) -> DeviceGrant:
    return DeviceGrant(
        device_code_hash=r["device_code_hash"],
        user_code=r["user_code"],
        client_id=r["client_id"],
        created_at=req_time(r["created_at"]),
        expires_at=req_time(r["expires_at"]),
        interval=int(r["interval"]),
        status=DeviceGrantStatus(r["status"]),
        user_id=r["user_id"],
        last_poll_at=opt_time(r["last_poll_at"]),
    )
