"""One contract for the scheduling half of every ``Store`` backend (SQLite and Redis)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aredis
from redis.crc import key_slot

import broker.store.redis_outbox
from broker.scheduling.model import (
    AuditEntry,
    Availability,
    Delivery,
    Event,
    Invite,
    Participant,
    ParticipantRole,
    Quality,
    Session,
    SessionKind,
    SessionStatus,
    Site,
    WebhookEndpoint,
    WeeklyHours,
)
from broker.scheduling.rules import DoubleBooked
from broker.store.base import Store, StoreUnavailable
from broker.store.redis import RedisStore
from broker.store.schedule_base import BookingGuard, SessionQuery
from broker.store.sqlite import SqliteStore
from tests.support.servers import free_port

Opener = Callable[[], Awaitable[Store]]

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a new store on the same data each time it is called."""
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


def session(
    ident: str,
    *,
    start: datetime = T0,
    minutes: int = 30,
    people: Sequence[str] = ("usr_doc", "usr_pat"),
    site: str = "site_1",
    clinic: str | None = "cln_1",
    status: SessionStatus = SessionStatus.BOOKED,
    series: str | None = None,
) -> Session:
    roles = [ParticipantRole.HOST] + [ParticipantRole.PATIENT] * (len(people) - 1)
    return Session(
        id=ident,
        kind=SessionKind.CHECKUP,
        title=f"Check-up {ident}",
        start=start,
        end=start + timedelta(minutes=minutes),
        time_zone="Europe/Paris",
        status=status,
        quality=Quality.HD,
        max_participants=3,
        participants=tuple(Participant(p, r) for p, r in zip(people, roles, strict=True)),
        created_by="usr_doc",
        created_at=T0 - timedelta(days=1),
        updated_at=T0 - timedelta(days=1),
        site_id=site,
        clinic_id=clinic,
        series_id=series,
        notes="never logged",
    )


def accept(candidate: Session) -> BookingGuard:
    return lambda clashing: candidate


def refuse_clashes(candidate: Session) -> BookingGuard:
    def guard(clashing: Sequence[Session]) -> Session:
        if clashing:
            raise DoubleBooked("slot taken")
        return candidate

    return guard


async def book(store: Store, s: Session, guard: BookingGuard | None = None) -> Session:
    return await store.book_session(s, guard or accept(s), s.start, s.end)


async def ids(store: Store, **query: object) -> list[str]:
    return [s.id for s in await store.list_sessions(SessionQuery(**query))]  # type: ignore[arg-type]


# sessions


async def test_book_get_and_update_session(store: Store) -> None:
    s = session("ses_1", series="ser_1")
    assert await book(store, s) == s
    assert await store.get_session("ses_1") == s
    assert await store.get_session("ses_9") is None
    checked_in = replace(s, status=SessionStatus.CHECKED_IN, updated_at=T0)
    await store.update_session(checked_in)
    assert await store.get_session("ses_1") == checked_in
    assert await ids(store, statuses=(SessionStatus.CHECKED_IN,)) == ["ses_1"]
    assert await ids(store, statuses=(SessionStatus.BOOKED,)) == []


async def test_update_session_inserts_an_unknown_session(store: Store) -> None:
    await store.update_session(session("ses_1"))
    assert await store.get_session("ses_1") == session("ses_1")
    assert await ids(store, user_id="usr_pat") == ["ses_1"]


async def test_guard_sees_overlapping_active_sessions_sharing_a_person_or_the_site(
    store: Store,
) -> None:
    candidate = session("ses_new", people=("usr_doc", "usr_pat"), site="site_1")
    others = [
        session("shares_person", people=("usr_x", "usr_pat"), site="site_2"),
        session("shares_host", people=("usr_doc", "usr_y"), site="site_3"),
        session("shares_site", people=("usr_x", "usr_y"), site="site_1"),
        session("long_before", start=T0 - 7 * HOUR, minutes=7 * 60 + 1, site="site_9"),
        session("partly", start=T0 + timedelta(minutes=29), site="site_9"),
        session("stranger", people=("usr_x", "usr_y"), site="site_2"),
        session("cancelled", status=SessionStatus.CANCELLED),
        session("noshow", status=SessionStatus.NOSHOW),
        session("ends_at_start", start=T0 - HOUR, minutes=60),
        session("starts_at_end", start=T0 + timedelta(minutes=30)),
        session("next_day", start=T0 + 24 * HOUR),
        session("ses_new", start=T0 + timedelta(minutes=5)),  # its own earlier version
    ]
    for other in others:
        await store.update_session(other)
    seen: list[list[str]] = []

    def guard(clashing: Sequence[Session]) -> Session:
        seen.append(sorted(s.id for s in clashing))
        assert all(isinstance(s, Session) for s in clashing)
        return candidate

    await store.book_session(candidate, guard, candidate.start, candidate.end)
    assert seen == [["long_before", "partly", "shares_host", "shares_person", "shares_site"]]


async def test_guard_window_may_be_wider_than_the_session(store: Store) -> None:
    await store.update_session(session("buffer", start=T0 + timedelta(minutes=40)))
    seen: list[list[str]] = []

    def guard(clashing: Sequence[Session]) -> Session:
        seen.append([s.id for s in clashing])
        return candidate

    candidate = session("ses_new")
    await store.book_session(candidate, guard, T0 - HOUR, T0 + HOUR)
    assert seen == [["buffer"]]


async def test_a_refusing_guard_writes_nothing(store: Store) -> None:
    await book(store, session("ses_1"))
    second = session("ses_2", start=T0 + timedelta(minutes=10))
    with pytest.raises(DoubleBooked):
        await book(store, second, refuse_clashes(second))
    assert await store.get_session("ses_2") is None
    assert await ids(store, user_id="usr_pat") == ["ses_1"]
    assert await ids(store) == ["ses_1"]


async def test_the_guard_decides_what_is_written(store: Store) -> None:
    candidate = session("ses_1")
    downgraded = replace(candidate, quality=Quality.SD)
    assert await book(store, candidate, lambda clashing: downgraded) == downgraded
    assert await store.get_session("ses_1") == downgraded


async def test_rebooking_the_same_id_replaces_time_people_and_indices(store: Store) -> None:
    await book(store, session("ses_1", series="ser_1"))
    moved = session(
        "ses_1",
        start=T0 + 48 * HOUR,
        people=("usr_doc", "usr_other"),
        clinic="cln_2",
        series="ser_2",
        site="site_2",
    )
    await book(store, moved, refuse_clashes(moved))  # its old self is no clash
    assert await store.get_session("ses_1") == moved
    assert await ids(store, starts_before=T0 + HOUR) == []
    assert await ids(store, starts_from=T0 + 47 * HOUR) == ["ses_1"]
    assert await ids(store, user_id="usr_pat") == []
    assert await ids(store, user_id="usr_other") == ["ses_1"]
    assert await ids(store, clinic_id="cln_1") == []
    assert await ids(store, clinic_id="cln_2") == ["ses_1"]
    assert await ids(store, series_id="ser_1") == []
    assert await ids(store, series_id="ser_2") == ["ses_1"]
    # The old slot is free again, for a person and for the site.
    again = session("ses_2", people=("usr_doc", "usr_pat"))
    await book(store, again, refuse_clashes(again))


async def test_update_session_moves_its_indices(store: Store) -> None:
    await book(store, session("ses_1"))
    await store.update_session(session("ses_1", start=T0 + 5 * HOUR, clinic=None))
    assert await ids(store, clinic_id="cln_1") == []
    assert await ids(store, starts_from=T0 + 4 * HOUR) == ["ses_1"]


async def test_list_sessions_filters_orders_and_limits(store: Store) -> None:
    rows = [
        session("b", start=T0, people=("usr_doc", "usr_pat")),
        session("a", start=T0, people=("usr_doc2", "usr_pat2"), site="site_2"),
        session("c", start=T0 + HOUR, clinic="cln_2", series="ser_1"),
        session("d", start=T0 - HOUR, status=SessionStatus.CANCELLED),
        session("e", start=T0 + 2 * HOUR, minutes=90, series="ser_1", clinic=None),
    ]
    for s in rows:
        await store.update_session(s)
    assert await ids(store) == ["d", "a", "b", "c", "e"]
    assert await ids(store, limit=2) == ["d", "a"]
    assert await ids(store, limit=0) == []
    assert await ids(store, user_id="usr_pat") == ["d", "b", "c", "e"]
    assert await ids(store, user_id="usr_pat2") == ["a"]
    assert await ids(store, user_id="usr_nobody") == []
    assert await ids(store, clinic_id="cln_1") == ["d", "a", "b"]
    assert await ids(store, clinic_id="cln_2") == ["c"]
    assert await ids(store, series_id="ser_1") == ["c", "e"]
    assert await ids(store, starts_from=T0) == ["a", "b", "c", "e"]
    assert await ids(store, starts_before=T0 + HOUR) == ["d", "a", "b"]
    assert await ids(store, starts_from=T0, starts_before=T0 + HOUR) == ["a", "b"]
    assert await ids(store, ends_before=T0 + timedelta(minutes=31)) == ["d", "a", "b"]
    assert await ids(store, ends_before=T0 + timedelta(minutes=30)) == ["d"]
    assert await ids(store, statuses=(SessionStatus.CANCELLED, SessionStatus.FULFILLED)) == ["d"]
    assert await ids(store, user_id="usr_pat", clinic_id="cln_1", starts_from=T0) == ["b"]
    assert await ids(store, user_id="usr_doc", series_id="ser_1", limit=1) == ["c"]
    assert await ids(store, clinic_id="cln_1", statuses=(SessionStatus.BOOKED,), limit=1) == ["a"]


async def test_list_sessions_reaches_past_many_non_matching_ones(store: Store) -> None:
    for n in range(450):
        status = SessionStatus.BOOKED if n % 150 == 149 else SessionStatus.CANCELLED
        await store.update_session(session(f"s{n:03}", start=T0 + n * HOUR, status=status))
    booked = await ids(store, statuses=(SessionStatus.BOOKED,), user_id="usr_pat", limit=2)
    assert booked == ["s149", "s299"]


async def test_concurrent_bookings_of_one_slot_have_exactly_one_winner(
    store: Store, open_store: Opener
) -> None:
    others = [await open_store() for _ in range(20)]
    try:
        candidates = [
            session(f"ses_{n:02}", people=("usr_doc", f"usr_pat{n}"), site=f"site_{n}")
            for n in range(20)
        ]
        results = await asyncio.gather(
            *(book(s, c, refuse_clashes(c)) for s, c in zip(others, candidates, strict=True)),
            return_exceptions=True,
        )
    finally:
        for other in others:
            await other.close()
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, DoubleBooked) for r in results if not isinstance(r, Session))
    assert await ids(store, user_id="usr_doc") == [winners[0].id]
    assert await ids(store) == [winners[0].id]


# availability and sites


def availability(clinician: str, clinic_id: str = "cln_1") -> Availability:
    return Availability(
        clinician_id=clinician,
        clinic_id=clinic_id,
        time_zone="Europe/Paris",
        slot_minutes=20,
        weekly=(WeeklyHours(0, T0.time(), (T0 + 4 * HOUR).time()),),
        updated_at=T0,
    )


async def test_availability_put_get_list_and_move(store: Store) -> None:
    await store.put_availability(availability("usr_b"))
    await store.put_availability(availability("usr_a"))
    await store.put_availability(availability("usr_c", "cln_2"))
    assert await store.get_availability("usr_a") == availability("usr_a")
    assert await store.get_availability("usr_z") is None
    assert [a.clinician_id for a in await store.list_availability("cln_1")] == ["usr_a", "usr_b"]
    changed = replace(availability("usr_a", "cln_2"), slot_minutes=30)
    await store.put_availability(changed)
    assert await store.get_availability("usr_a") == changed
    assert await store.list_availability("cln_1") == [availability("usr_b")]
    assert [a.clinician_id for a in await store.list_availability("cln_2")] == ["usr_a", "usr_c"]
    assert await store.list_availability("cln_9") == []


async def test_sites_put_get_and_replace(store: Store) -> None:
    await store.put_site(Site("site_1", "North clinic", 50_000))
    assert await store.get_site("site_1") == Site("site_1", "North clinic", 50_000)
    await store.put_site(Site("site_1", "North clinic", 80_000))
    assert await store.get_site("site_1") == Site("site_1", "North clinic", 80_000)
    assert await store.get_site("site_9") is None


# invites


def invite(n: int, *, max_uses: int = 1, at: datetime = T0, session_id: str = "ses_1") -> Invite:
    return Invite(
        id=f"inv_{n}",
        session_id=session_id,
        token_hash=f"ith{n}",
        role=ParticipantRole.GUEST,
        display_name=f"Guest {n}",
        created_by="usr_doc",
        created_at=at,
        expires_at=at + 2 * HOUR,
        max_uses=max_uses,
    )


async def test_invites_create_get_by_token_and_list_in_creation_order(store: Store) -> None:
    await store.create_invite(invite(1, at=T0 + HOUR))
    await store.create_invite(invite(2, at=T0))
    await store.create_invite(invite(3, session_id="ses_2"))
    assert await store.get_invite("inv_1") == invite(1, at=T0 + HOUR)
    assert await store.get_invite("inv_9") is None
    assert await store.get_invite_by_token("ith2") == invite(2)
    assert await store.get_invite_by_token("ith9") is None
    assert [i.id for i in await store.list_invites("ses_1")] == ["inv_2", "inv_1"]
    assert await store.list_invites("ses_9") == []


async def test_use_invite_counts_up_to_max_uses(store: Store) -> None:
    await store.create_invite(invite(1, max_uses=2))
    first = await store.use_invite("inv_1", T0)
    assert first == replace(invite(1, max_uses=2), uses=1)
    second = await store.use_invite("inv_1", T0 + timedelta(minutes=1))
    assert second is not None and second.uses == 2
    assert await store.use_invite("inv_1", T0 + timedelta(minutes=2)) is None
    stored = await store.get_invite("inv_1")
    assert stored is not None and stored.uses == 2
    assert await store.use_invite("inv_9", T0) is None


async def test_expired_and_revoked_invites_are_not_used(store: Store) -> None:
    await store.create_invite(invite(1, max_uses=5))
    assert await store.use_invite("inv_1", T0 + 2 * HOUR) is None  # expires_at is exclusive
    assert await store.use_invite("inv_1", T0 + 2 * HOUR - timedelta(microseconds=1))
    assert await store.revoke_invite("inv_1", T0 + HOUR) is True
    assert await store.revoke_invite("inv_1", T0 + HOUR) is False
    assert await store.revoke_invite("inv_9", T0) is False
    assert await store.use_invite("inv_1", T0 + HOUR) is None
    stored = await store.get_invite("inv_1")
    assert stored is not None and stored.revoked_at == T0 + HOUR and stored.uses == 1


async def test_concurrent_invite_uses_never_pass_max_uses(store: Store) -> None:
    await store.create_invite(invite(1, max_uses=3))
    results = await asyncio.gather(*(store.use_invite("inv_1", T0) for _ in range(20)))
    assert sorted(r.uses for r in results if r is not None) == [1, 2, 3]
    stored = await store.get_invite("inv_1")
    assert stored is not None and stored.uses == 3


# calendar feeds


async def test_feed_token_is_replaced(store: Store) -> None:
    assert await store.get_feed_user("fth1") is None
    await store.set_feed_token("usr_1", "fth1")
    await store.set_feed_token("usr_2", "fth2")
    assert await store.get_feed_user("fth1") == "usr_1"
    await store.set_feed_token("usr_1", "fth3")
    assert await store.get_feed_user("fth1") is None
    assert await store.get_feed_user("fth3") == "usr_1"
    assert await store.get_feed_user("fth2") == "usr_2"
    await store.set_feed_token("usr_1", "fth3")  # the same again
    assert await store.get_feed_user("fth3") == "usr_1"


# webhooks and the outbox


def endpoint(n: int, *, clinic_id: str = "cln_1", at: datetime = T0) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=f"whk_{n}",
        clinic_id=clinic_id,
        url=f"https://ehr.example.org/hook/{n}",
        secret=f"secret{n}",
        created_at=at,
        event_types=("session.booked",),
    )


async def test_webhooks_create_get_list_and_delete(store: Store) -> None:
    await store.create_webhook(endpoint(1, at=T0 + HOUR))
    await store.create_webhook(endpoint(2))
    await store.create_webhook(endpoint(3, clinic_id="cln_2"))
    assert await store.get_webhook("whk_1") == endpoint(1, at=T0 + HOUR)
    assert await store.get_webhook("whk_9") is None
    assert [w.id for w in await store.list_webhooks("cln_1")] == ["whk_2", "whk_1"]
    assert await store.delete_webhook("whk_2") is True
    assert await store.delete_webhook("whk_2") is False
    assert await store.get_webhook("whk_2") is None
    assert [w.id for w in await store.list_webhooks("cln_1")] == ["whk_1"]
    assert await store.list_webhooks("cln_2") == [endpoint(3, clinic_id="cln_2")]


def delivery(n: int, endpoint_id: str, session_id: str, *, at: datetime = T0) -> Delivery:
    event = Event(
        id=f"evt_{n}",
        type="session.booked",
        session_id=session_id,
        clinic_id="cln_1",
        occurred_at=at,
        data={"status": "booked"},
    )
    return Delivery(id=f"dlv_{n}", endpoint_id=endpoint_id, event=event, seq=0)


def dids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


async def test_enqueue_assigns_increasing_seq_and_lists_per_endpoint(store: Store) -> None:
    await store.enqueue_deliveries([delivery(1, "whk_1", "s1"), delivery(2, "whk_2", "s1")])
    await store.enqueue_deliveries([])
    await store.enqueue_deliveries([delivery(3, "whk_1", "s2"), delivery(4, "whk_1", "s1")])
    listed = await store.list_deliveries("whk_1", 10)
    assert dids(listed) == ["dlv_1", "dlv_3", "dlv_4"]
    seqs = [d.seq for d in listed]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[0] > 0
    assert listed[0] == replace(delivery(1, "whk_1", "s1"), seq=seqs[0])
    assert dids(await store.list_deliveries("whk_1", 2)) == ["dlv_1", "dlv_3"]
    assert dids(await store.list_deliveries("whk_2", 10)) == ["dlv_2"]
    assert await store.list_deliveries("whk_9", 10) == []


async def test_outbox_is_head_of_line_per_endpoint_and_session(store: Store) -> None:
    await store.enqueue_deliveries(
        [
            delivery(1, "whk_1", "s1"),
            delivery(2, "whk_1", "s1"),
            delivery(3, "whk_1", "s2"),
            delivery(4, "whk_2", "s1"),
            delivery(5, "whk_1", "s3", at=T0 + HOUR),  # not due before its time
        ]
    )
    assert dids(await store.due_deliveries(T0, 10)) == ["dlv_1", "dlv_3", "dlv_4"]
    assert dids(await store.due_deliveries(T0, 2)) == ["dlv_1", "dlv_3"]
    assert await store.due_deliveries(T0 - timedelta(seconds=1), 10) == []

    # A failure holds back the rest of its queue only.
    retry_at = T0 + timedelta(minutes=5)
    await store.mark_failed("dlv_1", 1, retry_at, "HTTP 503")
    assert dids(await store.due_deliveries(T0, 10)) == ["dlv_3", "dlv_4"]
    (failed,) = await store.due_deliveries(retry_at, 1)
    assert failed.id == "dlv_1" and failed.attempts == 1 and failed.last_error == "HTTP 503"
    assert failed.next_attempt_at == retry_at

    # Delivering the head lets the next one of the same queue through.
    await store.mark_delivered("dlv_1", retry_at)
    assert dids(await store.due_deliveries(retry_at, 10)) == ["dlv_2", "dlv_3", "dlv_4"]
    await store.mark_delivered("dlv_3", retry_at)
    await store.mark_delivered("dlv_2", retry_at)
    assert dids(await store.due_deliveries(retry_at, 10)) == ["dlv_4"]
    assert dids(await store.due_deliveries(T0 + HOUR, 10)) == ["dlv_4", "dlv_5"]

    # Delivered ones stay in the log, in order.
    log = await store.list_deliveries("whk_1", 10)
    assert dids(log) == ["dlv_1", "dlv_2", "dlv_3", "dlv_5"]
    assert [d.delivered_at for d in log] == [retry_at, retry_at, retry_at, None]
    assert log[0].attempts == 1 and log[0].last_error == "HTTP 503"


async def test_a_new_delivery_to_an_empty_queue_is_due(store: Store) -> None:
    await store.enqueue_deliveries([delivery(1, "whk_1", "s1")])
    await store.mark_delivered("dlv_1", T0)
    assert await store.due_deliveries(T0, 10) == []
    later = replace(delivery(2, "whk_1", "s1"), next_attempt_at=T0 + HOUR)
    await store.enqueue_deliveries([later])
    assert await store.due_deliveries(T0, 10) == []
    assert dids(await store.due_deliveries(T0 + HOUR, 10)) == ["dlv_2"]


async def test_marking_unknown_deliveries_is_harmless(store: Store) -> None:
    await store.mark_delivered("dlv_9", T0)
    await store.mark_failed("dlv_9", 1, T0, "boom")
    assert await store.due_deliveries(T0, 10) == []


# audit


async def test_audit_is_append_only_in_order(store: Store) -> None:
    entries = [
        AuditEntry("ses_1", T0 + timedelta(seconds=2), "joined", "usr_pat"),
        AuditEntry("ses_1", T0, "admitted", "usr_doc", "usr_pat"),  # order of appending wins
        AuditEntry("ses_2", T0, "ended", "usr_doc"),
        AuditEntry("ses_1", T0 + HOUR, "left", "usr_pat", reason="network"),
    ]
    for entry in entries:
        await store.append_audit(entry)
    assert await store.list_audit("ses_1") == [entries[0], entries[1], entries[3]]
    assert await store.list_audit("ses_2") == [entries[2]]
    assert await store.list_audit("ses_9") == []


async def test_update_session_appends_its_audit_entry(store: Store) -> None:
    s = session("ses_1")
    await book(store, s)
    first = AuditEntry("ses_1", T0, "joined", "usr_doc")
    await store.append_audit(first)
    arrived = replace(s, status=SessionStatus.ARRIVED, updated_at=T0)
    joined = AuditEntry("ses_1", T0 + timedelta(seconds=1), "joined", "usr_pat")
    await store.update_session(arrived, joined)
    assert await store.get_session("ses_1") == arrived
    assert await ids(store, statuses=(SessionStatus.ARRIVED,)) == ["ses_1"]
    assert await store.list_audit("ses_1") == [first, joined]


# coordination


async def test_lease_has_one_holder_until_it_expires(store: Store) -> None:
    assert await store.acquire_lease("reminders", "node_a", 0.3) is True
    assert await store.acquire_lease("reminders", "node_b", 0.3) is False
    assert await store.acquire_lease("reminders", "node_a", 0.3) is True  # extends
    assert await store.acquire_lease("outbox", "node_b", 0.3) is True  # another name
    await asyncio.sleep(0.4)
    assert await store.acquire_lease("reminders", "node_b", 10) is True
    assert await store.acquire_lease("reminders", "node_a", 10) is False


async def test_extending_a_lease_pushes_its_expiry(store: Store) -> None:
    assert await store.acquire_lease("outbox", "node_a", 0.4) is True
    await asyncio.sleep(0.25)
    assert await store.acquire_lease("outbox", "node_a", 0.4) is True
    await asyncio.sleep(0.25)  # past the first expiry, inside the second
    assert await store.acquire_lease("outbox", "node_b", 0.4) is False


async def test_mark_once_is_true_once_per_key(store: Store) -> None:
    assert await store.mark_once("reminder:ses_1:24h", 3600) is True
    assert await store.mark_once("reminder:ses_1:24h", 3600) is False
    assert await store.mark_once("reminder:ses_1:1h", 3600) is True


async def test_scheduling_data_survives_reopening(open_store: Opener) -> None:
    first = await open_store()
    try:
        await book(first, session("ses_1"))
        await first.create_invite(invite(1))
        await first.enqueue_deliveries([delivery(1, "whk_1", "ses_1")])
        await first.append_audit(AuditEntry("ses_1", T0, "joined", "usr_pat"))
    finally:
        await first.close()
    second = await open_store()
    try:
        assert await second.get_session("ses_1") == session("ses_1")
        assert await ids(second, user_id="usr_doc") == ["ses_1"]
        assert await second.get_invite_by_token("ith1") == invite(1)
        assert dids(await second.due_deliveries(T0, 10)) == ["dlv_1"]
        assert len(await second.list_audit("ses_1")) == 1
    finally:
        await second.close()


# Redis only


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


async def test_redis_booking_keys_share_one_cluster_slot(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await book(redis_store, session("ses_1", series="ser_1"))
    await redis_store.enqueue_deliveries([delivery(1, "whk_1", "ses_1")])
    await redis_store.mark_delivered("dlv_1", T0)
    keys = [str(k) for k in await redis_raw.keys("*")]
    sched = sorted(k for k in keys if "{sched}" in k)
    assert sched == [
        "cc:{sched}:clinic:cln_1",
        "cc:{sched}:longest",
        "cc:{sched}:series:ser_1",
        "cc:{sched}:session:ses_1",
        "cc:{sched}:sessions",
        "cc:{sched}:site:site_1",
        "cc:{sched}:user:usr_doc",
        "cc:{sched}:user:usr_pat",
    ]
    outbox = sorted(k for k in keys if "{outbox}" in k)
    assert outbox == [  # the queue and the due set are empty: nothing left to send
        "cc:{outbox}:delivered:whk_1",
        "cc:{outbox}:delivery:dlv_1",
        "cc:{outbox}:log:whk_1",
        "cc:{outbox}:seq",
    ]
    assert len({key_slot(k.encode()) for k in sched}) == 1
    assert len({key_slot(k.encode()) for k in outbox}) == 1
    assert all(k.startswith("cc:{") for k in keys)


async def test_redis_delivery_log_keeps_the_last_delivered_per_endpoint(
    redis_store: RedisStore, redis_raw: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker.store.redis_outbox, "DELIVERED_KEPT", 2)
    await redis_store.enqueue_deliveries([delivery(n, "whk_1", "s1") for n in range(1, 6)])
    for n in range(1, 5):
        await redis_store.mark_delivered(f"dlv_{n}", T0)
    assert dids(await redis_store.list_deliveries("whk_1", 10)) == ["dlv_3", "dlv_4", "dlv_5"]
    assert await redis_raw.exists("cc:{outbox}:delivery:dlv_1") == 0
    assert dids(await redis_store.due_deliveries(T0, 10)) == ["dlv_5"]


async def test_redis_stale_feed_token_entry_is_ignored(
    redis_store: RedisStore, redis_raw: aredis.Redis
) -> None:
    await redis_store.set_feed_token("usr_1", "fth2")
    # A replacement that stopped before removing the old reverse entry.
    await redis_raw.set("cc:{feed-token:fth1}", "usr_1")
    assert await redis_store.get_feed_user("fth1") is None
    assert await redis_store.get_feed_user("fth2") == "usr_1"


async def test_redis_scheduling_on_a_dead_port_is_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisStore(aredis.Redis.from_url(url, decode_responses=True))
    try:
        with pytest.raises(StoreUnavailable):
            await book(store, session("ses_1"))
        with pytest.raises(StoreUnavailable):
            await store.list_sessions(SessionQuery())
        with pytest.raises(StoreUnavailable):
            await store.use_invite("inv_1", T0)
        with pytest.raises(StoreUnavailable):
            await store.acquire_lease("outbox", "node_a", 1)
    finally:
        await store.close()


_RACER = """
import asyncio, sys, time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from broker.scheduling.model import (
    Participant, ParticipantRole, Quality, Session, SessionKind, SessionStatus,
)
from broker.scheduling.rules import DoubleBooked
from broker.store.redis import RedisStore

url, name, tries, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
template = Session(
    id="", kind=SessionKind.CHECKUP, title="race", start=start,
    end=start + timedelta(minutes=30), time_zone="UTC", status=SessionStatus.BOOKED,
    quality=Quality.HD, max_participants=2,
    participants=(Participant("usr_doc", ParticipantRole.HOST),),
    created_by="usr_doc", created_at=start, updated_at=start, site_id=name,
)

async def one(store, n):
    candidate = replace(template, id=f"{name}_{n}")
    def guard(clashing):
        if clashing:
            raise DoubleBooked("taken")
        return candidate
    try:
        await store.book_session(candidate, guard, candidate.start, candidate.end)
        return 1
    except DoubleBooked:
        return 0

async def main():
    stores = [await RedisStore.connect(url) for _ in range(tries)]
    await asyncio.sleep(max(0.0, go - time.time()))
    wins = await asyncio.gather(*(one(s, n) for n, s in enumerate(stores)))
    for s in stores:
        await s.close()
    print(sum(wins))

asyncio.run(main())
"""


async def test_redis_two_processes_booking_one_slot_have_one_winner(
    redis_store: RedisStore, redis_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    go = repr(time.time() + 2.0)  # both start booking at once, after importing and connecting
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            redis_url,
            name,
            "10",
            go,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("node_a", "node_b")
    ]
    outputs = [await asyncio.wait_for(p.communicate(), timeout=60) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    assert sum(int(out) for out, _ in outputs) == 1
    booked = await redis_store.list_sessions(
        SessionQuery(user_id="usr_doc", starts_from=T0, starts_before=T0 + HOUR)
    )
    assert len(booked) == 1


async def test_trusted_contacts_replace_and_stay_per_user(store: Store) -> None:
    assert await store.get_trusted_contacts("usr_a") == ()
    await store.set_trusted_contacts("usr_a", ("usr_b", "usr_c"))
    await store.set_trusted_contacts("usr_z", ("usr_a",))
    assert await store.get_trusted_contacts("usr_a") == ("usr_b", "usr_c")
    await store.set_trusted_contacts("usr_a", ("usr_c",))
    assert await store.get_trusted_contacts("usr_a") == ("usr_c",)
    assert await store.get_trusted_contacts("usr_z") == ("usr_a",)
