"""Pure rules: who may do what, and how hard to throttle. No I/O; unit-tested directly."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.domain import Role

SELF_REGISTER_ROLES = frozenset({Role.PATIENT, Role.FAMILY})
STAFF_ROLES = frozenset({Role.ADMIN, Role.CLINICIAN})

# Login throttling: after a few free attempts, each further failure doubles the wait.
ACCOUNT_FREE_FAILURES = 3
ADDRESS_FREE_FAILURES = 20  # many people may share one address (a clinic, a carrier NAT)
MAX_DELAY_SECONDS = 15 * 60
FAILURE_WINDOW_SECONDS = 24 * 3600

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")

# RFC 8628 section 6.1: user codes from a consonant-only alphabet, no vowels (no words),
# 8 characters = 20^8 = 34 bits, shown as XXXX-XXXX.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8


def throttle_delay(failures: int, free: int) -> int:
    """Seconds a client must wait after ``failures`` consecutive failures."""
    if failures < free:
        return 0
    return int(min(MAX_DELAY_SECONDS, 2 ** (failures - free)))


def retry_after(failures: int, free: int, last_at: datetime, now: datetime) -> int:
    """Seconds left before another attempt is allowed (0: go ahead)."""
    wait = throttle_delay(failures, free)
    if wait == 0:
        return 0
    until = last_at + timedelta(seconds=wait)
    left = (until - now).total_seconds()
    return max(0, int(left + 0.999))


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    if not _EMAIL.match(email):
        return "not a valid e-mail address"
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (from an access token) or a clinic system (from an API key)."""

    subject: str  # user id or api key id
    role: Role | None  # None for API keys
    clinic_id: str | None
    api_key: bool = False

    @property
    def is_staff(self) -> bool:
        return self.role is not None and self.role.is_staff


def can_read_clinic(p: Principal, clinic_id: str) -> bool:
    return p.clinic_id == clinic_id and (p.is_staff or p.api_key)


def can_manage_staff(p: Principal, clinic_id: str) -> bool:
    return p.clinic_id == clinic_id and p.role is Role.ADMIN


def can_manage_api_keys(p: Principal, clinic_id: str) -> bool:
    return p.clinic_id == clinic_id and p.role is Role.ADMIN


def can_pair_device(p: Principal) -> bool:
    return not p.api_key and p.role in (Role.PATIENT, Role.FAMILY, Role.CLINICIAN, Role.ADMIN)


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalize_user_code(text: str) -> str:
    """What a person typed -> the stored form: upper case, separators and spaces dropped."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def format_user_code(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"
