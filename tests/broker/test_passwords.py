"""argon2id hashing, and the upgrade of stored hashes at login when the parameters change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from broker.accounts import Accounts, NewUser
from broker.domain import Role
from broker.errors import AuthenticationFailed
from broker.passwords import HashParams, Passwords
from broker.store.sqlite import SqliteStore

OLD = HashParams(time_cost=1, memory_cost=8 * 1024, parallelism=1)
NEW = HashParams(time_cost=2, memory_cost=16 * 1024, parallelism=1)
SECRET = "correct horse battery"


def test_hash_is_argon2id_with_the_given_parameters() -> None:
    stored = Passwords(OLD).hash(SECRET)
    assert stored.startswith("$argon2id$")
    assert "m=8192,t=1,p=1" in stored
    assert SECRET not in stored


def test_hashes_are_salted() -> None:
    pw = Passwords(OLD)
    assert pw.hash(SECRET) != pw.hash(SECRET)


def test_verify() -> None:
    pw = Passwords(OLD)
    stored = pw.hash(SECRET)
    assert pw.verify(stored, SECRET)
    assert not pw.verify(stored, SECRET + "!")
    assert not pw.verify(stored, "")


def test_verify_unknown_account_is_false_even_with_the_dummy_password() -> None:
    pw = Passwords(OLD)
    assert not pw.verify(None, "citycall-no-such-account")
    assert not pw.verify(None, SECRET)


def test_verify_tolerates_garbage_hashes() -> None:
    pw = Passwords(OLD)
    assert not pw.verify("not-a-hash", SECRET)
    assert not pw.verify("$argon2id$v=19$m=8192,t=1,p=1$broken", SECRET)


def test_hash_from_other_parameters_still_verifies() -> None:
    stored = Passwords(OLD).hash(SECRET)
    assert Passwords(NEW).verify(stored, SECRET)


def test_needs_rehash_when_parameters_change() -> None:
    stored = Passwords(OLD).hash(SECRET)
    assert not Passwords(OLD).needs_rehash(stored)
    assert Passwords(NEW).needs_rehash(stored)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "citycall.db")
    try:
        yield s
    finally:
        await s.close()


async def test_login_rehashes_with_new_parameters(store: SqliteStore) -> None:
    user = await Accounts(store, Passwords(OLD)).create_user(
        NewUser("pat@example.org", SECRET, "Pat", Role.PATIENT)
    )
    assert "m=8192,t=1,p=1" in user.password_hash

    upgraded = Accounts(store, Passwords(NEW))
    await upgraded.authenticate("pat@example.org", SECRET, "127.0.0.1")

    stored = await store.get_user(user.id)
    assert stored is not None
    assert stored.password_hash != user.password_hash
    assert "m=16384,t=2,p=1" in stored.password_hash
    assert not Passwords(NEW).needs_rehash(stored.password_hash)
    # The new hash is of the same password, and a second login leaves it alone.
    assert Passwords(NEW).verify(stored.password_hash, SECRET)
    await upgraded.authenticate("pat@example.org", SECRET, "127.0.0.1")
    again = await store.get_user(user.id)
    assert again is not None and again.password_hash == stored.password_hash


async def test_failed_login_does_not_rehash(store: SqliteStore) -> None:
    user = await Accounts(store, Passwords(OLD)).create_user(
        NewUser("pat@example.org", SECRET, "Pat", Role.PATIENT)
    )
    with pytest.raises(AuthenticationFailed):
        await Accounts(store, Passwords(NEW)).authenticate(
            "pat@example.org", "wrong password!", "127.0.0.1"
        )
    stored = await store.get_user(user.id)
    assert stored is not None and stored.password_hash == user.password_hash
