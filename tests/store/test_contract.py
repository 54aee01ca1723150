"""One contract for every ``Store`` backend: SQLite on a temp file, Redis on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aredis

from broker.domain import (
    ApiKey,
    Clinic,
    DeviceGrant,
    DeviceGrantStatus,
    RefreshToken,
    Role,
    SigningKey,
    User,
)
from broker.errors import Conflict
from broker.store.base import DuplicateEmail, Store, StoreUnavailable
from broker.store.codec import encode
from broker.store.redis import RedisStore
from broker.store.sqlite import SqliteStore
from tests.support.servers import free_port

Opener = Callable[[], Awaitable[Store]]

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a new store on the same data each time it is called (to test durability)."""
    if request.param == "sqlite":
        path = tmp_path / "broker.db"
        return lambda: SqliteStore.open(path)
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisStore.connect(url)


@pytest_asyncio.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    opened = await open_store()
    try:
        yield opened
    finally:
        await opened.close()


def clinic(n: int = 1, *, name: str | None = None, at: datetime = T0) -> Clinic:
    return Clinic(
        id=f"cln_{n}", name=name or f"Clinic {n}", time_zone="Europe/Paris", created_at=at
    )


def user(n: int, *, clinic_id: str | None = None, at: datetime = T0, **changes: object) -> User:
    made = User(
        id=f"usr_{n}",
        email=f"person{n}@example.org",
        display_name=f"Person {n}",
        role=Role.CLINICIAN if clinic_id else Role.PATIENT,
        password_hash=f"$argon2id$hash{n}",
        created_at=at,
        updated_at=at,
        clinic_id=clinic_id,
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def refresh(n: int = 1, *, family: str = "fam_1") -> RefreshToken:
    return RefreshToken(
        token_hash=f"rth{n}",
        family_id=family,
        user_id="usr_1",
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
    )


def api_key(n: int, clinic_id: str, *, at: datetime = T0) -> ApiKey:
    return ApiKey(
        id=f"key_{n}",
        clinic_id=clinic_id,
        name=f"EHR {n}",
        secret_hash=f"sha{n}",
        created_at=at,
        created_by="usr_1",
    )


def grant(n: int = 1, *, user_code: str | None = None) -> DeviceGrant:
    return DeviceGrant(
        device_code_hash=f"dch{n}",
        user_code=user_code or f"BCDF-GHJ{n}",
        client_id="tv",
        created_at=T0,
        expires_at=T0 + timedelta(minutes=10),
        interval=5,
    )


async def test_ping(store: Store) -> None:
    await store.ping()


# clinics


async def test_clinic_create_get_and_find_by_name_in_any_case(store: Store) -> None:
    await store.create_clinic(clinic(1, name="Riverside Health"))
    assert await store.get_clinic("cln_1") == clinic(1, name="Riverside Health")
    assert await store.find_clinic_by_name("riverside HEALTH") == clinic(1, name="Riverside Health")
    assert await store.get_clinic("cln_x") is None
    assert await store.find_clinic_by_name("Hillside") is None


async def test_find_clinic_by_name_returns_the_oldest_of_namesakes(store: Store) -> None:
    await store.create_clinic(clinic(2, name="North", at=T0 + timedelta(hours=1)))
    await store.create_clinic(clinic(1, name="NORTH", at=T0))
    found = await store.find_clinic_by_name("north")
    assert found is not None and found.id == "cln_1"


# users


async def test_user_create_and_get_by_id_and_email(store: Store) -> None:
    await store.create_clinic(clinic(1))
    created = user(1, clinic_id="cln_1", time_zone="Europe/Paris", disabled=True)
    await store.create_user(created)
    assert await store.get_user("usr_1") == created
    assert await store.get_user_by_email("person1@example.org") == created
    assert await store.get_user("usr_2") is None
    assert await store.get_user_by_email("nobody@example.org") is None


async def test_duplicate_email_is_refused_and_the_first_user_kept(store: Store) -> None:
    await store.create_user(user(1))
    with pytest.raises(DuplicateEmail):
        await store.create_user(user(2, email="person1@example.org"))
    assert await store.get_user("usr_2") is None
    assert await store.get_user_by_email("person1@example.org") == user(1)


async def test_update_user_keeps_the_email(store: Store) -> None:
    await store.create_user(user(1))
    changed = user(1, display_name="Renamed", updated_at=T0 + timedelta(minutes=1))
    await store.update_user(changed)
    assert await store.get_user("usr_1") == changed
    assert await store.get_user_by_email("person1@example.org") == changed


async def test_update_user_email_change_frees_the_old_address(store: Store) -> None:
    await store.create_user(user(1))
    moved = user(1, email="new1@example.org")
    await store.update_user(moved)
    assert await store.get_user_by_email("new1@example.org") == moved
    assert await store.get_user_by_email("person1@example.org") is None
    # The old address can be registered again; the new one cannot.
    await store.create_user(user(2, email="person1@example.org"))
    with pytest.raises(DuplicateEmail):
        await store.create_user(user(3, email="new1@example.org"))


async def test_update_user_to_a_taken_email_is_refused(store: Store) -> None:
    await store.create_user(user(1))
    await store.create_user(user(2))
    with pytest.raises(DuplicateEmail):
        await store.update_user(user(2, email="person1@example.org"))
    assert await store.get_user("usr_2") == user(2)
    assert await store.get_user_by_email("person1@example.org") == user(1)
    assert await store.get_user_by_email("person2@example.org") == user(2)


async def test_list_clinic_users_by_creation_time_and_per_clinic(store: Store) -> None:
    await store.create_clinic(clinic(1))
    await store.create_clinic(clinic(2))
    await store.create_user(user(1, clinic_id="cln_1", at=T0 + timedelta(hours=2)))
    await store.create_user(user(2, clinic_id="cln_1", at=T0))
    await store.create_user(user(3, clinic_id="cln_2", at=T0 + timedelta(hours=1)))
    await store.create_user(user(4, clinic_id="cln_1", at=T0 + timedelta(hours=1)))
    await store.create_user(user(5))  # no clinic

    assert [u.id for u in await store.list_clinic_users("cln_1")] == ["usr_2", "usr_4", "usr_1"]
    assert await store.list_clinic_users("cln_2") == [
        user(3, clinic_id="cln_2", at=T0 + timedelta(hours=1))
    ]
    assert await store.list_clinic_users("cln_9") == []


async def test_moving_a_user_to_another_clinic_moves_the_listing(store: Store) -> None:
    await store.create_clinic(clinic(1))
    await store.create_clinic(clinic(2))
    await store.create_user(user(1, clinic_id="cln_1"))
    await store.update_user(user(1, clinic_id="cln_2"))
    assert await store.list_clinic_users("cln_1") == []
    assert [u.id for u in await store.list_clinic_users("cln_2")] == ["usr_1"]


# refresh tokens


async def test_refresh_token_create_get_and_single_use(store: Store) -> None:
    await store.create_refresh_token(refresh(1))
    assert await store.get_refresh_token("rth1") == refresh(1)
    assert await store.get_refresh_token("rth9") is None

    used_at = T0 + timedelta(minutes=5)
    assert await store.mark_refresh_token_used("rth1", used_at) is True
    assert await store.mark_refresh_token_used("rth1", used_at + timedelta(seconds=1)) is False
    assert await store.get_refresh_token("rth1") == replace(refresh(1), used_at=used_at)
    assert await store.mark_refresh_token_used("rth9", used_at) is False


async def test_concurrent_refresh_token_use_has_exactly_one_winner(store: Store) -> None:
    await store.create_refresh_token(refresh(1))
    results = await asyncio.gather(
        *(store.mark_refresh_token_used("rth1", T0 + timedelta(seconds=i)) for i in range(20))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    stored = await store.get_refresh_token("rth1")
    assert stored is not None and stored.used_at == T0 + timedelta(seconds=winner)


async def test_refresh_family_revocation(store: Store) -> None:
    assert await store.is_refresh_family_revoked("fam_1") is False
    await store.revoke_refresh_family("fam_1", T0)
    await store.revoke_refresh_family("fam_1", T0 + timedelta(seconds=1))  # idempotent
    assert await store.is_refresh_family_revoked("fam_1") is True
    assert await store.is_refresh_family_revoked("fam_2") is False


# API keys


async def test_api_keys_create_get_list_and_revoke_once(store: Store) -> None:
    await store.create_clinic(clinic(1))
    await store.create_clinic(clinic(2))
    await store.create_api_key(api_key(1, "cln_1", at=T0 + timedelta(hours=1)))
    await store.create_api_key(api_key(2, "cln_1", at=T0))
    await store.create_api_key(api_key(3, "cln_2"))
    assert await store.get_api_key("key_1") == api_key(1, "cln_1", at=T0 + timedelta(hours=1))
    assert await store.get_api_key("key_9") is None
    assert [k.id for k in await store.list_api_keys("cln_1")] == ["key_2", "key_1"]
    assert [k.id for k in await store.list_api_keys("cln_2")] == ["key_3"]
    assert await store.list_api_keys("cln_9") == []

    revoked_at = T0 + timedelta(days=1)
    assert await store.revoke_api_key("key_2", revoked_at) is True
    assert await store.revoke_api_key("key_2", revoked_at + timedelta(hours=1)) is False
    assert await store.revoke_api_key("key_9", revoked_at) is False
    assert await store.get_api_key("key_2") == replace(api_key(2, "cln_1"), revoked_at=revoked_at)
    listed = await store.list_api_keys("cln_1")
    assert [k.revoked_at for k in listed] == [revoked_at, None]


# device grants


async def test_device_grant_create_and_get_by_both_codes(store: Store) -> None:
    await store.create_device_grant(grant(1))
    assert await store.get_device_grant("dch1") == grant(1)
    assert await store.get_device_grant_by_user_code("BCDF-GHJ1") == grant(1)
    assert await store.get_device_grant("dch9") is None
    assert await store.get_device_grant_by_user_code("ZZZZ-ZZZZ") is None


async def test_device_grant_duplicate_user_code_is_a_conflict(store: Store) -> None:
    await store.create_device_grant(grant(1, user_code="KLMN-PQRS"))
    with pytest.raises(Conflict):
        await store.create_device_grant(grant(2, user_code="KLMN-PQRS"))
    assert await store.get_device_grant("dch2") is None
    assert await store.get_device_grant_by_user_code("KLMN-PQRS") == grant(1, user_code="KLMN-PQRS")


async def test_device_grant_update_compares_the_status(store: Store) -> None:
    await store.create_device_grant(grant(1))
    approved = replace(grant(1), status=DeviceGrantStatus.APPROVED, user_id="usr_1")
    assert await store.update_device_grant(approved, DeviceGrantStatus.CONSUMED) is False
    assert await store.get_device_grant("dch1") == grant(1)

    assert await store.update_device_grant(approved, DeviceGrantStatus.PENDING) is True
    assert await store.get_device_grant("dch1") == approved
    assert await store.get_device_grant_by_user_code("BCDF-GHJ1") == approved

    polled = replace(approved, last_poll_at=T0 + timedelta(seconds=30))
    assert await store.update_device_grant(polled) is True  # unconditional
    assert await store.get_device_grant("dch1") == polled
    assert await store.update_device_grant(grant(9)) is False  # nothing to replace
    assert await store.get_device_grant("dch9") is None


async def test_concurrent_device_grant_consumption_has_exactly_one_winner(store: Store) -> None:
    approved = replace(grant(1), status=DeviceGrantStatus.APPROVED, user_id="usr_1")
    await store.create_device_grant(approved)
    consumed = replace(approved, status=DeviceGrantStatus.CONSUMED)
    results = await asyncio.gather(
        *(store.update_device_grant(consumed, DeviceGrantStatus.APPROVED) for _ in range(10))
    )
    assert results.count(True) == 1
    assert await store.get_device_grant("dch1") == consumed


# signing keys


async def test_signing_keys_put_list_and_replace_by_kid(store: Store) -> None:
    assert await store.list_signing_keys() == []
    old = SigningKey(kid="k1", public_jwk='{"kty":"OKP","x":"a"}', created_at=T0)
    new = SigningKey(kid="k2", public_jwk='{"kty":"OKP","x":"b"}', created_at=T0 + timedelta(1))
    await store.put_signing_key(new)
    await store.put_signing_key(old)
    assert await store.list_signing_keys() == [old, new]

    retiring = replace(old, retire_at=T0 + timedelta(days=2))
    await store.put_signing_key(retiring)
    assert await store.list_signing_keys() == [retiring, new]


# login throttling


async def test_login_failures_count_within_the_window(store: Store) -> None:
    assert await store.get_login_failures("acct:usr_1") is None
    first = await store.record_login_failure("acct:usr_1", T0, 60)
    assert (first.count, first.last_at) == (1, T0)
    await store.record_login_failure("acct:usr_1", T0 + timedelta(seconds=30), 60)
    third = await store.record_login_failure("acct:usr_1", T0 + timedelta(seconds=80), 60)
    assert (third.count, third.last_at) == (3, T0 + timedelta(seconds=80))
    assert await store.get_login_failures("acct:usr_1") == third
    other = await store.record_login_failure("ip:192.0.2.1", T0, 60)
    assert other.count == 1


async def test_login_failures_restart_after_the_window(store: Store) -> None:
    await store.record_login_failure("acct:usr_1", T0, 60)
    await store.record_login_failure("acct:usr_1", T0 + timedelta(seconds=10), 60)
    later = T0 + timedelta(seconds=10 + 61)
    restarted = await store.record_login_failure("acct:usr_1", later, 60)
    assert (restarted.count, restarted.last_at) == (1, later)
    assert await store.get_login_failures("acct:usr_1") == restarted


async def test_clear_login_failures(store: Store) -> None:
    await store.record_login_failure("acct:usr_1", T0, 60)
    await store.record_login_failure("acct:usr_2", T0, 60)
    await store.clear_login_failures("acct:usr_1")
    await store.clear_login_failures("acct:never")
    assert await store.get_login_failures("acct:usr_1") is None
    restarted = await store.record_login_failure("acct:usr_1", T0 + timedelta(seconds=1), 60)
    assert restarted.count == 1
    kept = await store.get_login_failures("acct:usr_2")
    assert kept is not None and kept.count == 1


# durability


async def test_data_survives_closing_and_reopening(open_store: Opener) -> None:
    first = await open_store()
    try:
        await first.create_clinic(clinic(1))
        await first.create_user(user(1, clinic_id="cln_1"))
        await first.create_refresh_token(refresh(1))
        await first.mark_refresh_token_used("rth1", T0 + timedelta(minutes=1))
        await first.revoke_refresh_family("fam_1", T0)
        await first.create_api_key(api_key(1, "cln_1"))
        await first.create_device_grant(grant(1))
        await first.put_signing_key(SigningKey(kid="k1", public_jwk="{}", created_at=T0))
        await first.record_login_failure("acct:usr_1", T0, 3600)
    finally:
        await first.close()

    second = await open_store()
    try:
        assert await second.find_clinic_by_name("clinic 1") == clinic(1)
        assert await second.get_user_by_email("person1@example.org") == user(1, clinic_id="cln_1")
        assert [u.id for u in await second.list_clinic_users("cln_1")] == ["usr_1"]
        token = await second.get_refresh_token("rth1")
        assert token is not None and token.used_at == T0 + timedelta(minutes=1)
        assert await second.is_refresh_family_revoked("fam_1") is True
        assert await second.list_api_keys("cln_1") == [api_key(1, "cln_1")]
        assert await second.get_device_grant_by_user_code("BCDF-GHJ1") == grant(1)
        assert [k.kid for k in await second.list_signing_keys()] == ["k1"]
        failures = await second.get_login_failures("acct:usr_1")
        assert failures is not None and failures.count == 1
        with pytest.raises(DuplicateEmail):
            await second.create_user(user(2, email="person1@example.org"))
    finally:
        await second.close()


# Redis only


async def test_redis_store_on_a_dead_port_is_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisStore(aredis.Redis.from_url(url, decode_responses=True))
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get_user("usr_1")
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable):
        await RedisStore.connect(url)


async def test_redis_store_calls_after_a_redis_restart_succeed(durable_redis: Any) -> None:
    """Pooled connections that Redis closed when it restarted are opened again for the next
    call, which succeeds: no request fails because Redis restarted a while ago."""
    url, restart, stop, start = durable_redis
    store = await RedisStore.connect(url)
    try:
        await asyncio.gather(
            *(store.create_user(user(n)) for n in range(1, 6))
        )  # a few in the pool
        await asyncio.to_thread(restart)  # the append-only file keeps the users
        got = await asyncio.gather(*(store.get_user(f"usr_{n}") for n in range(1, 6)))
        assert [u.id if u else None for u in got] == [f"usr_{n}" for n in range(1, 6)]
        await asyncio.to_thread(stop)
        with pytest.raises(StoreUnavailable):  # while it is down: an error, at once
            await store.get_user("usr_1")
        await asyncio.to_thread(start)
        assert await store.get_user("usr_1") == user(1)
    finally:
        await store.close()


@pytest_asyncio.fixture
async def redis_raw(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = await RedisStore.connect(redis_url)
    try:
        yield store
    finally:
        await store.close()


async def test_redis_keys_carry_the_prefix_and_one_hash_tag(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await redis_store.create_clinic(clinic(1))
    await redis_store.create_user(user(1, clinic_id="cln_1"))
    await redis_store.create_api_key(api_key(1, "cln_1"))
    await redis_store.create_refresh_token(refresh(1))
    await redis_store.create_device_grant(grant(1))
    await redis_store.put_signing_key(SigningKey(kid="k1", public_jwk="{}", created_at=T0))
    await redis_store.record_login_failure("acct:usr_1", T0, 60)
    keys = sorted(await redis_raw.keys("*"))
    assert keys == [
        "cc:{api-key:key_1}",
        "cc:{clinic-name:clinic 1}",
        "cc:{clinic:cln_1}",
        "cc:{clinic:cln_1}:api-keys",
        "cc:{clinic:cln_1}:users",
        "cc:{device:dch1}",
        "cc:{email:person1@example.org}",
        "cc:{login-failures:acct:usr_1}",
        "cc:{refresh:rth1}",
        "cc:{signing-keys}",
        "cc:{user-code:BCDF-GHJ1}",
        "cc:{user:usr_1}",
    ]
    # Permanent records and a committed e-mail claim have no TTL.
    assert await redis_raw.ttl("cc:{email:person1@example.org}") == -1
    assert await redis_raw.ttl("cc:{user:usr_1}") == -1


async def test_redis_expiring_records_have_a_ttl_from_their_lifetime(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await redis_store.create_refresh_token(refresh(1))  # 30 days + 1 day grace
    await redis_store.mark_refresh_token_used("rth1", T0)  # keeps the TTL
    assert 30 * 86400 < await redis_raw.ttl("cc:{refresh:rth1}") <= 31 * 86400
    await redis_store.create_device_grant(grant(1))  # 10 minutes (+ 1 hour for the grant)
    assert 0 < await redis_raw.ttl("cc:{user-code:BCDF-GHJ1}") <= 600
    approved = replace(grant(1), status=DeviceGrantStatus.APPROVED)
    assert await redis_store.update_device_grant(approved, DeviceGrantStatus.PENDING)
    assert 3600 < await redis_raw.ttl("cc:{device:dch1}") <= 4200
    await redis_store.record_login_failure("acct:usr_1", T0, 60)
    assert 0 < await redis_raw.ttl("cc:{login-failures:acct:usr_1}") <= 60
    await redis_store.revoke_refresh_family("fam_1", T0)
    assert await redis_raw.ttl("cc:{refresh-family:fam_1}") > 89 * 86400


async def test_redis_prefix_separates_two_stores(redis_url: str, redis_raw: aredis.Redis) -> None:
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    other = RedisStore(client, prefix="test")
    try:
        await other.create_user(user(1))
        assert await redis_raw.exists("test:{user:usr_1}") == 1
        main = await RedisStore.connect(redis_url)
        try:
            assert await main.get_user("usr_1") is None
            await main.create_user(user(1))  # the same e-mail is free under another prefix
        finally:
            await main.close()
    finally:
        await other.close()


async def test_redis_live_claim_blocks_the_address_until_it_expires(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    # A writer that stopped right after claiming the address (crash between steps).
    await redis_raw.set("cc:{email:person1@example.org}", "usr_ghost", px=200)
    with pytest.raises(DuplicateEmail):
        await redis_store.create_user(user(1))
    assert await redis_store.get_user_by_email("person1@example.org") is None
    await asyncio.sleep(0.3)
    await redis_store.create_user(user(1))
    assert await redis_store.get_user_by_email("person1@example.org") == user(1)


async def test_redis_stale_email_entry_is_reclaimed(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await redis_store.create_user(user(1))
    # An e-mail change that stopped after writing the user, before releasing the old address.
    await redis_raw.set("cc:{user:usr_1}", encode(user(1, email="moved@example.org")))
    assert await redis_store.get_user_by_email("person1@example.org") is None
    await redis_store.create_user(user(2, email="person1@example.org"))
    assert await redis_store.get_user_by_email("person1@example.org") == user(
        2, email="person1@example.org"
    )
    assert await redis_raw.ttl("cc:{email:person1@example.org}") == -1


async def test_redis_failed_create_leaves_nothing_behind(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await redis_store.create_user(user(1))
    with pytest.raises(Conflict):  # same id, new address: the user write fails
        await redis_store.create_user(user(1, email="other@example.org"))
    assert await redis_raw.exists("cc:{email:other@example.org}") == 0
    assert await redis_store.get_user("usr_1") == user(1)
