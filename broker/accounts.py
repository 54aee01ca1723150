"""Accounts: clinics, users and passwords, with login throttling."""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from dataclasses import dataclass, replace
from datetime import datetime

from broker import policy
from broker.domain import Clinic, Role, User, new_id, utcnow
from broker.errors import (
    INVALID_CREDENTIALS,
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Throttled,
)
from broker.passwords import Passwords
from broker.policy import Principal
from broker.store.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    password: str
    display_name: str
    role: Role
    clinic_id: str | None = None
    time_zone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ProfileChange:
    display_name: str | None = None
    email: str | None = None
    time_zone: str | None = None
    password: str | None = None
    current_password: str | None = None


def check_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # 'Europe' is a folder
        raise InvalidInput(f"unknown time zone {name!r}", field="time_zone") from None
    return name


class Accounts:
    def __init__(self, store: Store, passwords: Passwords) -> None:
        self._store = store
        self._passwords = passwords

    # clinics
    async def create_clinic(self, name: str, time_zone: str = "UTC") -> Clinic:
        if not name.strip():
            raise InvalidInput("clinic name is empty", field="name")
        clinic = Clinic(new_id("cln"), name.strip(), check_time_zone(time_zone), utcnow())
        await self._store.create_clinic(clinic)
        log.info("clinic created", extra={"clinic_id": clinic.id})
        return clinic

    async def get_clinic(self, clinic_id: str) -> Clinic:
        clinic = await self._store.get_clinic(clinic_id)
        if clinic is None:
            raise NotFound("no such clinic")
        return clinic

    # users
    async def create_user(self, new: NewUser) -> User:
        email = policy.normalize_email(new.email)
        problem = policy.email_problem(email)
        if problem:
            raise InvalidInput(f"email: {problem}", field="email")
        problem = policy.password_problem(new.password)
        if problem:
            raise InvalidInput(f"password: {problem}", field="password")
        if not new.display_name.strip():
            raise InvalidInput("display_name is empty", field="display_name")
        if new.role.is_staff:
            if new.clinic_id is None:
                raise InvalidInput("staff belong to a clinic", field="clinic_id")
            await self.get_clinic(new.clinic_id)
        elif new.clinic_id is not None:
            raise InvalidInput("only staff belong to a clinic", field="clinic_id")
        now = utcnow()
        password_hash = await asyncio.to_thread(self._passwords.hash, new.password)
        user = User(
            id=new_id("usr"),
            email=email,
            display_name=new.display_name.strip(),
            role=new.role,
            password_hash=password_hash,
            created_at=now,
            updated_at=now,
            clinic_id=new.clinic_id,
            time_zone=check_time_zone(new.time_zone),
        )
        await self._store.create_user(user)
        log.info("user created", extra={"user_id": user.id, "role": user.role.value})
        return user

    async def register(self, new: NewUser) -> User:
        """Self-service sign-up: patients and family members only."""
        if new.role not in policy.SELF_REGISTER_ROLES:
            raise InvalidInput("only patient or family accounts can sign up", field="role")
        return await self.create_user(replace(new, clinic_id=None))

    async def add_staff(self, by: Principal, clinic_id: str, new: NewUser) -> User:
        if not policy.can_manage_staff(by, clinic_id):
            raise PermissionDenied("only the clinic's admins add staff")
        if new.role not in policy.STAFF_ROLES:
            raise InvalidInput("staff role must be admin or clinician", field="role")
        return await self.create_user(replace(new, clinic_id=clinic_id))

    async def list_staff(self, by: Principal, clinic_id: str) -> list[User]:
        if not policy.can_read_clinic(by, clinic_id):
            raise PermissionDenied("not a member of this clinic")
        return await self._store.list_clinic_users(clinic_id)

    async def get_user(self, user_id: str) -> User:
        user = await self._store.get_user(user_id)
        if user is None or user.disabled:
            raise NotFound("no such user")
        return user

    async def update_profile(self, user_id: str, change: ProfileChange) -> User:
        user = await self.get_user(user_id)
        updated = user
        if change.display_name is not None:
            if not change.display_name.strip():
                raise InvalidInput("display_name is empty", field="display_name")
            updated = replace(updated, display_name=change.display_name.strip())
        if change.time_zone is not None:
            updated = replace(updated, time_zone=check_time_zone(change.time_zone))
        if change.email is not None or change.password is not None:
            # Changing how one logs in needs the current password.
            ok = change.current_password is not None and await asyncio.to_thread(
                self._passwords.verify, user.password_hash, change.current_password
            )
            if not ok:
                raise PermissionDenied(
                    "current_password is required and must be right", code=INVALID_CREDENTIALS
                )
        if change.email is not None:
            email = policy.normalize_email(change.email)
            problem = policy.email_problem(email)
            if problem:
                raise InvalidInput(f"email: {problem}", field="email")
            updated = replace(updated, email=email)
        if change.password is not None:
            problem = policy.password_problem(change.password)
            if problem:
                raise InvalidInput(f"password: {problem}", field="password")
            new_hash = await asyncio.to_thread(self._passwords.hash, change.password)
            updated = replace(updated, password_hash=new_hash)
        if updated != user:
            updated = replace(updated, updated_at=utcnow())
            await self._store.update_user(updated)
        return updated

    # login
    async def authenticate(self, email: str, password: str, client: str) -> User:
        """Check a password, throttled per account and per client address.

        Unknown accounts and wrong passwords give the same error after the same work.
        """
        email = policy.normalize_email(email)
        now = utcnow()
        account_key, address_key = f"acct:{email}", f"addr:{client}"
        await self._check_throttle(account_key, policy.ACCOUNT_FREE_FAILURES, now)
        await self._check_throttle(address_key, policy.ADDRESS_FREE_FAILURES, now)
        user = await self._store.get_user_by_email(email)
        stored = user.password_hash if user is not None and not user.disabled else None
        ok = await asyncio.to_thread(self._passwords.verify, stored, password)
        if not ok or user is None:
            for key in (account_key, address_key):
                await self._store.record_login_failure(key, utcnow(), policy.FAILURE_WINDOW_SECONDS)
            log.info("login failed", extra={"user_id": user.id if user else None})
            raise AuthenticationFailed("wrong e-mail or password", code=INVALID_CREDENTIALS)
        await self._store.clear_login_failures(account_key)
        if self._passwords.needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(self._passwords.hash, password)
            user = replace(user, password_hash=new_hash, updated_at=utcnow())
            await self._store.update_user(user)
            log.info("password rehashed", extra={"user_id": user.id})
        return user

    async def _check_throttle(self, key: str, free: int, now: datetime) -> None:
        failures = await self._store.get_login_failures(key)
        if failures is None:
            return
        wait = policy.retry_after(failures.count, free, failures.last_at, now)
        if wait > 0:
            raise Throttled("too many failed logins; try again later", retry_after=wait)
