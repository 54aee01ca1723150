"""Webhooks: signatures, the outbox, and delivery to a real HTTP receiver on loopback.

Every delivery test runs against both real stores (``SqliteStore`` on disk, ``RedisStore`` on a
throw-away redis-server) and a real aiohttp server; workers run with millisecond backoff and a
short lease so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.api import webhooks as webhooks_api
from broker.domain import Role, new_id
from broker.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.scheduling.model import Delivery, Event, WebhookEndpoint
from broker.store.base import Store
from broker.store.redis import RedisStore
from broker.store.sqlite import SqliteStore
from broker.webhooks import (
    EVENT_TYPES,
    PARTICIPANT_JOINED,
    PARTICIPANT_LEFT,
    SESSION_CREATED,
    SESSION_UPDATED,
    Outbox,
    Webhooks,
    WebhookWorker,
    new_secret,
    payload,
    retry_delay,
    safe_data,
    sign,
    signed_headers,
    url_problem,
    verify,
)
from tests.support.app import app_services, auth, staff_account
from tests.support.servers import free_port

CLINIC = "cln_test"
ADMIN = Principal("usr_admin", Role.ADMIN, CLINIC)
WAIT = 10.0


# A real receiver


class Receiver:
    """An aiohttp server on a fixed loopback port that records what it is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0  # answer this many requests with 500 first
        self.failures = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        app.router.add_post("/moved", self._moved)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            return web.Response(status=500)
        self.received.append((dict(request.headers), body))
        return web.Response(status=204)

    async def _moved(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/hooks")

    def events(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(body) for _, body in self.received]

    async def wait_for(self, count: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} events arrived")
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a new store on the same data each time (a restart, or another node)."""
    if request.param == "sqlite":
        path = tmp_path / "db"

        async def sqlite() -> Store:
            return await SqliteStore.open(path)

        return sqlite
    url: str = request.getfixturevalue("redis_url")

    async def redis() -> Store:
        return await RedisStore.connect(url)

    return redis


@pytest_asyncio.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    s = await open_store()
    try:
        yield s
    finally:
        await s.close()


def fast_worker(store: Store, **kw: Any) -> WebhookWorker:
    params: dict[str, Any] = dict(
        poll_interval=0.05,
        base_delay=0.05,
        jitter=0.0,
        request_timeout=1.0,
        lease_ttl=2.0,
        private_targets=True,  # the receivers here listen on loopback
    )
    params.update(kw)
    return WebhookWorker(store, **params)


async def running(worker: WebhookWorker) -> WebhookWorker:
    worker.start()
    return worker


def event(
    session_id: str = "ses_1",
    kind: str = SESSION_CREATED,
    clinic_id: str | None = CLINIC,
    **data: str,
) -> Event:
    return Event(new_id("evt"), kind, session_id, clinic_id, datetime.now(UTC), data)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# Signatures


def test_sign_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks / Svix reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_secrets_are_whsec_and_32_random_bytes() -> None:
    import base64

    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


def test_verify_accepts_the_signed_message_and_refuses_changes() -> None:
    secret = new_secret()
    now = 1_700_000_000
    body = b'{"id":"evt_1"}'
    headers = signed_headers(secret, "evt_1", now, body)
    assert verify(secret, headers, body, now)
    assert verify(secret, {k.upper(): v for k, v in headers.items()}, body, now + 299)
    assert not verify(secret, headers, body + b" ", now)  # tampered body
    assert not verify(secret, headers, body, now + 301)  # too old
    assert not verify(secret, headers, body, now - 301)  # from the future
    assert not verify(new_secret(), headers, body, now)  # another key
    assert not verify(secret, {**headers, "webhook-id": "evt_2"}, body, now)
    assert not verify(secret, {**headers, "webhook-timestamp": "soon"}, body, now)
    assert not verify(secret, {"webhook-id": "evt_1"}, body, now)
    old = new_secret()
    both = {**headers, "webhook-signature": f"{sign(old, 'evt_1', now, body)} "}
    both["webhook-signature"] += headers["webhook-signature"]  # key rotation: two signatures
    assert verify(secret, both, body, datetime.fromtimestamp(now, UTC))


# Pure helpers


def test_retry_delay_doubles_up_to_the_cap_with_jitter_below() -> None:
    assert [retry_delay(n, 1.0, 3600.0, 0.0, 0.5) for n in (1, 2, 3, 12, 13, 40, 10_000)] == [
        1.0,
        2.0,
        4.0,
        2048.0,
        3600.0,
        3600.0,
        3600.0,
    ]
    assert retry_delay(3, 1.0, 3600.0, 0.25, 0.999) == pytest.approx(3.0, abs=0.01)
    assert retry_delay(3, 1.0, 3600.0, 0.25, 0.0) == 4.0


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://ehr.example.org/hooks", True),
        ("http://127.0.0.1:8080/x?y=1", True),
        ("ftp://ehr.example.org/", False),
        ("javascript:alert(1)", False),
        ("file:///etc/passwd", False),
        ("https:///nohost", False),
        ("https://user:pw@ehr.example.org/", False),
        ("https://ehr.example.org/a b", False),
        ("https://ehr.example.org:99999/", False),
        ("https://ehr.example.org/" + "a" * 2100, False),
    ],
)
def test_url_problem(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


def test_event_data_keeps_ids_times_and_codes_only() -> None:
    assert safe_data(
        {
            "participant_id": "usr_1",
            "reason": "network",
            "left_at": "2025-01-01T00:00:00Z",
            "display_name": "Jane Doe",
            "email": "jane@example.org",
            "notes": "allergic",
        }
    ) == {"participant_id": "usr_1", "reason": "network", "left_at": "2025-01-01T00:00:00Z"}


def test_payload_shape() -> None:
    e = Event(
        "evt_1",
        PARTICIPANT_LEFT,
        "ses_1",
        CLINIC,
        datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        {"participant_id": "usr_1", "reason": "network_lost"},
    )
    assert msgspec.json.decode(payload(e)) == {
        "id": "evt_1",
        "type": "participant.left",
        "occurred_at": "2025-03-01T12:00:00Z",
        "session_id": "ses_1",
        "clinic_id": CLINIC,
        "data": {"participant_id": "usr_1", "reason": "network_lost"},
    }


def test_api_event_types_match_the_service() -> None:
    assert set(get_args(webhooks_api.EventType)) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 10


# The outbox


async def test_events_without_a_clinic_or_unsubscribed_make_no_deliveries(
    store: Store,
) -> None:
    hooks = Webhooks(store, private_targets=True)
    every = await hooks.create(ADMIN, CLINIC, "https://a.example.org/")
    joins = await hooks.create(ADMIN, CLINIC, "https://b.example.org/", [PARTICIPANT_JOINED])
    off = WebhookEndpoint(
        "whk_off", CLINIC, "https://c.example.org/", new_secret(), datetime.now(UTC), (), True
    )
    await store.create_webhook(off)
    woken: list[bool] = []
    outbox = Outbox(store, wake=lambda: woken.append(True))

    await outbox.emit(event(clinic_id=None))
    await outbox.emit(event(clinic_id="cln_other"))
    assert woken == []
    await outbox.emit(event(kind=SESSION_CREATED))
    await outbox.emit(event(kind=PARTICIPANT_JOINED, participant_id="usr_1", display_name="X"))

    every_log = await store.list_deliveries(every.id, 10)
    joins_log = await store.list_deliveries(joins.id, 10)
    assert [d.event.type for d in every_log] == [SESSION_CREATED, PARTICIPANT_JOINED]
    assert [d.event.type for d in joins_log] == [PARTICIPANT_JOINED]
    assert joins_log[0].event.data == {"participant_id": "usr_1"}  # the name never stored
    assert await store.list_deliveries(off.id, 10) == []
    assert woken == [True, True]


# Delivery to a real receiver


async def test_delivered_once_in_order_and_signed(store: Store, receiver: Receiver) -> None:
    endpoint = await Webhooks(store, private_targets=True).create(ADMIN, CLINIC, receiver.url)
    worker = await running(fast_worker(store))
    outbox = Outbox(store, wake=worker.wake)
    try:
        sent = [event("ses_1", SESSION_UPDATED, n=str(i)) for i in range(10)]
        for e in sent:
            await outbox.emit(e)
        await receiver.wait_for(10)
        await asyncio.sleep(0.3)  # anything extra would arrive now
    finally:
        await worker.stop()

    assert [e["id"] for e in receiver.events()] == [e.id for e in sent]
    for (headers, body), e in zip(receiver.received, sent, strict=True):
        assert headers["webhook-id"] == e.id
        assert headers["Content-Type"] == "application/json"
        assert verify(endpoint.secret, headers, body, time.time())
        assert not verify(endpoint.secret, headers, body.replace(b"ses_1", b"ses_2"), time.time())
    assert receiver.events()[0]["data"] == {}  # "n" is neither an id nor a code
    log = await store.list_deliveries(endpoint.id, 100)
    assert all(d.delivered_at is not None and d.attempts == 0 for d in log)


async def test_a_failing_receiver_gets_the_event_on_retry_and_order_holds(
    store: Store, receiver: Receiver
) -> None:
    hooks = Webhooks(store, private_targets=True)
    endpoint = await hooks.create(ADMIN, CLINIC, receiver.url)
    receiver.fail_next = 2
    worker = await running(fast_worker(store))
    outbox = Outbox(store, wake=worker.wake)
    try:
        first, second = event("ses_1"), event("ses_1", SESSION_UPDATED)
        await outbox.emit(first)
        await outbox.emit(second)
        await receiver.wait_for(2)
        await asyncio.sleep(0.2)
    finally:
        await worker.stop()

    assert receiver.failures == 2
    assert [e["id"] for e in receiver.events()] == [first.id, second.id]
    log = await hooks.deliveries(ADMIN, CLINIC, endpoint.id, 10)
    assert [(d.attempts, d.last_error) for d in log] == [(2, "HTTP 500"), (0, None)]
    assert all(d.delivered_at is not None for d in log)


async def test_a_worker_alone_on_its_store_polls_seldom_and_still_retries_on_time(
    store: Store, receiver: Receiver
) -> None:
    """A broker without Redis looks at its store every few seconds only (POLL_ALONE): new
    events wake the worker, and so do the retries it schedules, when they fall due."""
    hooks = Webhooks(store, private_targets=True)
    await hooks.create(ADMIN, CLINIC, receiver.url)
    receiver.fail_next = 2  # retried after 0.2 s, then 0.4 s
    worker = await running(fast_worker(store, poll_interval=60.0, base_delay=0.2))
    outbox = Outbox(store, wake=worker.wake)
    looked = 0
    due_deliveries = store.due_deliveries

    async def counted(now: datetime, limit: int) -> list[Delivery]:
        nonlocal looked
        looked += 1
        return await due_deliveries(now, limit)

    store.due_deliveries = counted  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        await outbox.emit(event("ses_1"))
        await receiver.wait_for(1, timeout=5.0)
        took = time.monotonic() - started
        await asyncio.sleep(1.0)  # idle now: no more looks
    finally:
        await worker.stop()

    assert receiver.failures == 2
    assert 0.6 <= took < 5.0
    assert looked <= 8  # a look per wake-up (event, two retries) and after each pass


async def test_a_worker_whose_store_fails_waits_its_poll_between_tries(
    store: Store, receiver: Receiver
) -> None:
    """A retry that fell due while the store is failing does not make the worker hammer it."""
    hooks = Webhooks(store, private_targets=True)
    await hooks.create(ADMIN, CLINIC, receiver.url)
    receiver.fail_next = 1
    worker = await running(fast_worker(store, poll_interval=0.3, base_delay=1.0))
    outbox = Outbox(store, wake=worker.wake)
    tries = 0

    async def failing(*args: Any) -> Any:
        nonlocal tries
        tries += 1
        raise ConnectionError("store down")

    try:
        await outbox.emit(event("ses_1"))
        deadline = time.monotonic() + WAIT
        while receiver.failures == 0:  # the first attempt failed: a retry is scheduled
            assert time.monotonic() < deadline, "no first attempt"
            await asyncio.sleep(0.01)
        store.due_deliveries = failing  # type: ignore[method-assign]
        store.acquire_lease = failing  # type: ignore[method-assign]
        await asyncio.sleep(2.0)  # the lease is to be renewed (0.67 s), then the retry falls due
    finally:
        await worker.stop()

    assert 1 <= tries <= 10  # one try per poll (0.3 s), not one per turn of the loop


async def test_redirects_are_not_followed(store: Store, receiver: Receiver) -> None:
    endpoint = await Webhooks(store, private_targets=True).create(
        ADMIN, CLINIC, receiver.url.replace("/hooks", "/moved")
    )
    worker = await running(fast_worker(store))
    try:
        await Outbox(store, wake=worker.wake).emit(event())

        async def failed() -> bool:
            log = await store.list_deliveries(endpoint.id, 1)
            return bool(log and log[0].attempts >= 1)

        await eventually(failed)
    finally:
        await worker.stop()
    log = await store.list_deliveries(endpoint.id, 1)
    assert log[0].last_error == "HTTP 307" and log[0].delivered_at is None
    assert receiver.received == []


async def test_outbox_survives_a_restart(open_store: Opener) -> None:
    receiver = Receiver(free_port())  # not listening yet
    store = await open_store()
    endpoint = await Webhooks(store, private_targets=True).create(ADMIN, CLINIC, receiver.url)
    worker = await running(fast_worker(store))
    sent = event("ses_1")
    try:
        await Outbox(store, wake=worker.wake).emit(sent)

        async def refused() -> bool:
            log = await store.list_deliveries(endpoint.id, 1)
            return bool(log and log[0].attempts >= 1)

        await eventually(refused)
    finally:
        await worker.stop()
        await store.close()

    store = await open_store()
    await receiver.start()
    worker = await running(fast_worker(store))  # a new process: a new node id
    try:
        await receiver.wait_for(1)  # after the old node's lease runs out
        await asyncio.sleep(0.3)
        [log] = await store.list_deliveries(endpoint.id, 10)
        assert log.delivered_at is not None and log.attempts >= 1
        assert log.last_error is not None and "Connect" in log.last_error
    finally:
        await worker.stop()
        await store.close()
        await receiver.stop()
    assert [e["id"] for e in receiver.events()] == [sent.id]


async def test_two_nodes_on_one_store_deliver_exactly_once(
    open_store: Opener, receiver: Receiver
) -> None:
    node_a = await open_store()
    node_b = await open_store()
    await Webhooks(node_a, private_targets=True).create(ADMIN, CLINIC, receiver.url)
    a = await running(fast_worker(node_a, node_id="node_a"))
    b = await running(fast_worker(node_b, node_id="node_b"))
    try:
        outbox_a, outbox_b = Outbox(node_a, wake=a.wake), Outbox(node_b, wake=b.wake)
        sent = [event(f"ses_{i % 2}", SESSION_UPDATED) for i in range(20)]
        for i, e in enumerate(sent):
            await (outbox_a if i % 3 else outbox_b).emit(e)
        await receiver.wait_for(20)
        await asyncio.sleep(0.3)
        assert sorted(e["id"] for e in receiver.events()) == sorted(e.id for e in sent)
        for session in ("ses_0", "ses_1"):
            got = [e["id"] for e in receiver.events() if e["session_id"] == session]
            assert got == [e.id for e in sent if e.session_id == session]
        assert a.holds_lease != b.holds_lease

        # The sender stops; the other node takes over once the lease expires.
        leader, follower, follower_outbox = (a, b, outbox_b) if a.holds_lease else (b, a, outbox_a)
        await leader.stop()
        late = event("ses_0", PARTICIPANT_LEFT, participant_id="usr_1", reason="network_lost")
        await follower_outbox.emit(late)
        await receiver.wait_for(21)
        assert follower.holds_lease
        assert receiver.events()[-1]["data"] == {
            "participant_id": "usr_1",
            "reason": "network_lost",
        }
    finally:
        await a.stop()
        await b.stop()
        await node_a.close()
        await node_b.close()
    assert len(receiver.received) == 21


async def test_a_deleted_endpoint_gets_nothing_more(store: Store, receiver: Receiver) -> None:
    hooks = Webhooks(store, private_targets=True)
    endpoint = await hooks.create(ADMIN, CLINIC, receiver.url)
    await Outbox(store).emit(event())  # queued while no worker runs
    await hooks.delete(ADMIN, CLINIC, endpoint.id)
    worker = await running(fast_worker(store))
    try:

        async def closed() -> bool:
            log = await store.list_deliveries(endpoint.id, 1)
            return log[0].delivered_at is not None

        await eventually(closed)
        assert await worker.run_once() == 0
    finally:
        await worker.stop()
    [log] = await store.list_deliveries(endpoint.id, 1)
    assert log.last_error == "endpoint deleted" and log.attempts == 0
    assert await store.due_deliveries(datetime.now(UTC) + timedelta(days=1), 10) == []
    assert receiver.received == []


# The service's rules


async def test_who_may_manage_webhooks(store: Store) -> None:
    hooks = Webhooks(store, private_targets=True)
    key = Principal("key_1", None, CLINIC, api_key=True)
    made = await hooks.create(key, CLINIC, "https://ehr.example.org/hooks")
    assert made.secret.startswith("whsec_")
    for outsider in (
        Principal("usr_doc", Role.CLINICIAN, CLINIC),
        Principal("usr_pat", Role.PATIENT, None),
        Principal("usr_adm2", Role.ADMIN, "cln_other"),
        Principal("key_2", None, "cln_other", api_key=True),
    ):
        with pytest.raises(PermissionDenied):
            await hooks.create(outsider, CLINIC, "https://ehr.example.org/x")
        with pytest.raises(PermissionDenied):
            await hooks.list(outsider, CLINIC)
        with pytest.raises(PermissionDenied):
            await hooks.deliveries(outsider, CLINIC, made.id)
    assert [(e.id, e.secret) for e in await hooks.list(ADMIN, CLINIC)] == [(made.id, "")]
    other = Principal("usr_adm2", Role.ADMIN, "cln_other")
    with pytest.raises(NotFound):
        await hooks.delete(other, "cln_other", made.id)
    await hooks.delete(key, CLINIC, made.id)
    with pytest.raises(NotFound):
        await hooks.delete(key, CLINIC, made.id)


async def test_create_refuses_bad_input_and_too_many(store: Store) -> None:
    hooks = Webhooks(store, max_endpoints=2, private_targets=True)
    with pytest.raises(InvalidInput):
        await hooks.create(ADMIN, CLINIC, "ftp://ehr.example.org/")
    with pytest.raises(InvalidInput):
        await hooks.create(ADMIN, CLINIC, "https://ehr.example.org/", ["session.exploded"])
    made = await hooks.create(
        ADMIN, CLINIC, "https://ehr.example.org/", [PARTICIPANT_LEFT, PARTICIPANT_LEFT]
    )
    assert made.event_types == (PARTICIPANT_LEFT,)
    await hooks.create(ADMIN, CLINIC, "https://ehr.example.org/2")
    with pytest.raises(Conflict):
        await hooks.create(ADMIN, CLINIC, "https://ehr.example.org/3")


# Over HTTP


@pytest_asyncio.fixture
async def hooks_client(client: TestClient[Any, Any]) -> TestClient[Any, Any]:
    """The broker app; its webhook routes and service are wired by app.py."""
    return client


async def test_webhooks_over_http(hooks_client: TestClient[Any, Any]) -> None:
    admin = await staff_account(hooks_client)
    clinician = await staff_account(hooks_client, admin.clinic_id, Role.CLINICIAN)
    api_key = await app_services(hooks_client).api_keys.create(
        str(admin.clinic_id), "ehr", admin.user_id
    )
    base = f"/api/v1/clinics/{admin.clinic_id}/webhooks"

    resp = await hooks_client.post(
        base,
        json={"url": "https://ehr.example.org/hooks", "event_types": ["participant.left"]},
        headers=auth(api_key.token),
    )
    created = await resp.json()
    assert resp.status == 201, created
    hook_id = created["webhook"]["id"]
    assert created["secret"].startswith("whsec_")
    assert created["webhook"]["event_types"] == ["participant.left"]

    resp = await hooks_client.get(base, headers=admin.headers)
    listed = await resp.json()
    assert resp.status == 200 and [h["id"] for h in listed["items"]] == [hook_id]
    assert "secret" not in listed["items"][0]

    resp = await hooks_client.get(base, headers=clinician.headers)
    assert resp.status == 403
    resp = await hooks_client.post(base, json={"url": "gopher://x.example"}, headers=admin.headers)
    assert resp.status == 422
    resp = await hooks_client.post(
        base, json={"url": "https://x.example/", "event_types": ["nope"]}, headers=admin.headers
    )
    assert resp.status == 422

    resp = await hooks_client.get(f"{base}/{hook_id}/deliveries?limit=5", headers=admin.headers)
    assert resp.status == 200 and (await resp.json()) == {"items": []}
    resp = await hooks_client.get(f"{base}/{hook_id}/deliveries?limit=0", headers=admin.headers)
    assert resp.status == 422

    resp = await hooks_client.delete(f"{base}/{hook_id}", headers=admin.headers)
    assert resp.status == 204
    resp = await hooks_client.get(f"{base}/{hook_id}/deliveries", headers=admin.headers)
    assert resp.status == 404


# Private networks (broker/egress.py)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://10.0.0.5/hooks",
        "http://192.168.1.20/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hooks",
        "http://[::1]:8080/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://[fd00::1]/hooks",
    ],
)
async def test_an_address_of_a_private_network_cannot_be_registered(store: Store, url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await Webhooks(store).create(ADMIN, CLINIC, url)
    assert "public address" in str(refused.value)
    assert await Webhooks(store, private_targets=True).create(ADMIN, CLINIC, url)  # if allowed


async def test_a_name_or_an_old_endpoint_on_a_private_network_is_never_posted_to(
    store: Store, receiver: Receiver
) -> None:
    """A host name is judged by what it resolves to, at delivery: ``localhost`` is refused. An
    endpoint registered while private targets were allowed is refused once they are not."""
    by_name = await Webhooks(store).create(ADMIN, CLINIC, f"http://localhost:{receiver.port}/hooks")
    by_address = await Webhooks(store, private_targets=True).create(ADMIN, CLINIC, receiver.url)
    worker = await running(fast_worker(store, private_targets=False))
    outbox = Outbox(store, wake=worker.wake)
    try:
        await outbox.emit(event("ses_1", SESSION_UPDATED))

        async def both_tried() -> bool:
            logs = [await store.list_deliveries(e.id, 10) for e in (by_name, by_address)]
            return all(log and log[0].attempts >= 1 for log in logs)

        deadline = time.monotonic() + 10
        while not await both_tried():
            assert time.monotonic() < deadline, "no delivery attempt"
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert receiver.received == []
    named = (await store.list_deliveries(by_name.id, 10))[0]
    literal = (await store.list_deliveries(by_address.id, 10))[0]
    for tried in (named, literal):
        assert tried.delivered_at is None and tried.last_error == "refused: not a public address"
