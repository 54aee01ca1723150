"""Pure rules of ``broker.policy``: throttling, input checks, permissions, user codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker import policy
from broker.domain import Role
from broker.policy import Principal

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "free", "delay"),
    [
        (0, 3, 0),
        (2, 3, 0),
        (3, 3, 1),
        (4, 3, 2),
        (5, 3, 4),
        (19, 20, 0),
        (20, 20, 1),
        (100, 3, policy.MAX_DELAY_SECONDS),
    ],
)
def test_throttle_delay_doubles_after_free_attempts(failures: int, free: int, delay: int) -> None:
    assert policy.throttle_delay(failures, free) == delay


def test_retry_after_counts_down_from_last_failure() -> None:
    # 5 failures with 3 free: wait 4 s from the last failure.
    assert policy.retry_after(5, 3, NOW, NOW) == 4
    assert policy.retry_after(5, 3, NOW, NOW + timedelta(seconds=1.5)) == 3
    assert policy.retry_after(5, 3, NOW, NOW + timedelta(seconds=4)) == 0
    assert policy.retry_after(5, 3, NOW, NOW + timedelta(hours=1)) == 0
    assert policy.retry_after(2, 3, NOW, NOW) == 0


def test_retry_after_rounds_up_so_clients_never_retry_early() -> None:
    assert policy.retry_after(3, 3, NOW, NOW + timedelta(milliseconds=100)) == 1


def test_normalize_email() -> None:
    assert policy.normalize_email("  Pat.Smith@Example.ORG ") == "pat.smith@example.org"


@pytest.mark.parametrize("email", ["pat@example.org", "a.b+tag@sub.example.co.uk", "x@y.zz"])
def test_valid_emails(email: str) -> None:
    assert policy.email_problem(email) is None


@pytest.mark.parametrize(
    "email", ["", "pat", "pat@", "@example.org", "pat@example", "p at@example.org", "a@b@c.org"]
)
def test_invalid_emails(email: str) -> None:
    assert policy.email_problem(email) == "not a valid e-mail address"


def test_password_length_bounds() -> None:
    assert policy.password_problem("x" * policy.MIN_PASSWORD_LENGTH) is None
    assert policy.password_problem("x" * policy.MAX_PASSWORD_LENGTH) is None
    short = policy.password_problem("x" * (policy.MIN_PASSWORD_LENGTH - 1))
    assert short is not None and "at least" in short
    long = policy.password_problem("x" * (policy.MAX_PASSWORD_LENGTH + 1))
    assert long is not None and "at most" in long


def test_self_registration_is_for_patients_and_families_only() -> None:
    assert frozenset({Role.PATIENT, Role.FAMILY}) == policy.SELF_REGISTER_ROLES
    assert not (policy.SELF_REGISTER_ROLES & policy.STAFF_ROLES)
    assert Role.GUEST not in policy.SELF_REGISTER_ROLES


ADMIN_A = Principal("usr_a", Role.ADMIN, "cln_a")
CLINICIAN_A = Principal("usr_c", Role.CLINICIAN, "cln_a")
PATIENT = Principal("usr_p", Role.PATIENT, None)
FAMILY = Principal("usr_f", Role.FAMILY, None)
GUEST = Principal("usr_g", Role.GUEST, None)
KEY_A = Principal("key_a", None, "cln_a", api_key=True)


def test_principal_is_staff() -> None:
    assert ADMIN_A.is_staff and CLINICIAN_A.is_staff
    assert not PATIENT.is_staff and not KEY_A.is_staff


@pytest.mark.parametrize(
    ("who", "clinic", "allowed"),
    [
        (ADMIN_A, "cln_a", True),
        (CLINICIAN_A, "cln_a", True),
        (KEY_A, "cln_a", True),
        (ADMIN_A, "cln_b", False),
        (KEY_A, "cln_b", False),
        (PATIENT, "cln_a", False),
        # A non-staff user with a clinic claim still may not read it.
        (Principal("usr_x", Role.PATIENT, "cln_a"), "cln_a", False),
    ],
)
def test_can_read_clinic(who: Principal, clinic: str, allowed: bool) -> None:
    assert policy.can_read_clinic(who, clinic) is allowed


@pytest.mark.parametrize(
    ("who", "clinic", "allowed"),
    [
        (ADMIN_A, "cln_a", True),
        (ADMIN_A, "cln_b", False),
        (CLINICIAN_A, "cln_a", False),
        (KEY_A, "cln_a", False),
        (PATIENT, "cln_a", False),
    ],
)
def test_only_the_clinics_admin_manages_staff_and_keys(
    who: Principal, clinic: str, allowed: bool
) -> None:
    assert policy.can_manage_staff(who, clinic) is allowed
    assert policy.can_manage_api_keys(who, clinic) is allowed


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (PATIENT, True),
        (FAMILY, True),
        (CLINICIAN_A, True),
        (ADMIN_A, True),
        (GUEST, False),
        (KEY_A, False),
    ],
)
def test_can_pair_device(who: Principal, allowed: bool) -> None:
    assert policy.can_pair_device(who) is allowed


def test_user_codes_use_the_consonant_alphabet() -> None:
    assert not set("AEIOUY") & set(policy.USER_CODE_ALPHABET)
    assert len(set(policy.USER_CODE_ALPHABET)) == 20
    codes = {policy.new_user_code() for _ in range(200)}
    assert len(codes) > 190  # 20^8 codes: collisions in 200 draws are vanishingly rare
    for code in codes:
        assert len(code) == policy.USER_CODE_LENGTH
        assert set(code) <= set(policy.USER_CODE_ALPHABET)


def test_user_code_format_and_normalize_round_trip() -> None:
    code = "BCDFGHJK"
    shown = policy.format_user_code(code)
    assert shown == "BCDF-GHJK"
    assert policy.normalize_user_code(shown) == code
    assert policy.normalize_user_code(" bcdf ghjk ") == code
    assert policy.normalize_user_code("bcdf\u2013ghjk") == code  # en dash from a phone keyboard
    assert policy.normalize_user_code("---") == ""
