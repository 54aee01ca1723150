"""Real calls through the broker: aiortc peers driven by ``BrokerClient``, HD video both ways.

In-process broker (one node), two broker processes on one redis-server, and relay-only through
a real coturn. ICE stays on loopback (``loopback_ice``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.domain import Role
from broker.turn import turn_credentials
from signaling.client import BrokerClient, Event, IceServer, PeerLink
from signaling.peer import rtc_configuration
from tests.support.app import Account, family_call, make_client, signed_up, staff_account
from tests.support.broker_proc import BrokerLauncher, BrokerProcess
from tests.support.webrtc import PatternTrack, TurnServer, frames_of

pytestmark = pytest.mark.usefixtures("loopback_ice")

FRAMES = 60
PASSWORD = "media-password-123"


@dataclass(frozen=True, slots=True)
class Call:
    session_id: str
    host: BrokerClient
    patient: BrokerClient


def window(minutes: int = 5) -> tuple[str, str]:
    start = datetime.now(UTC) + timedelta(minutes=minutes)
    return start.isoformat(), (start + timedelta(minutes=20)).isoformat()


async def book_in_process(client: TestClient[Any, Any]) -> tuple[str, Account, Account]:
    """A check-up between a new clinician and a new patient; returns (session, doc, patient)."""
    admin = await staff_account(client)
    doc = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
    patient = await signed_up(client, "patient")
    start, end = window()
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "Check-up",
            "start": start,
            "end": end,
            "clinician_id": doc.user_id,
            "patient_id": patient.user_id,
        },
        headers=admin.headers,
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["items"][0]["id"], doc, patient


def sdk(client: TestClient[Any, Any], token: str, **options: Any) -> BrokerClient:
    """A ``BrokerClient`` for the in-process server (its join answers name port 8080)."""
    base = str(client.make_url("")).rstrip("/")
    ws = base.replace("http", "ws", 1) + "/ws"
    return BrokerClient(base, token, tracks=[PatternTrack()], signaling_url=ws, **options)


async def enter(session_id: str, host: BrokerClient, patient: BrokerClient) -> Call:
    """The clinician joins, the patient waits and is admitted."""
    await host.join_session(session_id)
    await host.wait_for("joined")
    await patient.join_session(session_id)
    assert (await patient.wait_for("waiting")).data["position"] == 1
    room = await host.wait_for("waiting-room", where=lambda e: bool(e.data["waiting"]))
    assert [p["peer_id"] for p in room.data["waiting"]] == [patient.peer_id]
    assert patient.peer_id is not None
    await host.admit(patient.peer_id)
    await patient.wait_for("admitted")
    joined = await patient.wait_for("joined")
    assert [p["peer_id"] for p in joined.data["peers"]] == [host.peer_id]
    assert joined.data["quality"]["width"] == 1280
    await host.wait_for("peer-joined", peer=patient.peer_id)
    return Call(session_id, host, patient)


async def hd_both_ways(call: Call, timeout: float = 20.0) -> None:
    """Each side decodes FRAMES frames of 1280x720 and gets a data channel message."""
    host, patient = call.host, call.patient
    assert host.peer_id is not None and patient.peer_id is not None
    to_host = await host.wait_for("track", peer=patient.peer_id, timeout=timeout)
    to_patient = await patient.wait_for("track", peer=host.peer_id, timeout=timeout)
    for me, other in ((host, patient), (patient, host)):
        opened = await me.wait_for("channel-open", peer=other.peer_id, timeout=timeout)
        assert opened.channel is not None
        opened.channel.send(f"hello from {me.role}")
    got_host = await host.wait_for("channel-message", peer=patient.peer_id, timeout=timeout)
    got_patient = await patient.wait_for("channel-message", peer=host.peer_id, timeout=timeout)
    assert got_host.data["data"] == "hello from patient"
    assert got_patient.data["data"] == "hello from host"
    for event in (to_host, to_patient):
        assert event.track is not None and event.track.kind == "video"
    received = await asyncio.gather(
        frames_of(to_host.track, FRAMES, timeout),  # type: ignore[arg-type]
        frames_of(to_patient.track, FRAMES, timeout),  # type: ignore[arg-type]
    )
    for frames in received:
        assert {(f.width, f.height) for f in frames} == {(1280, 720)}
    for me, other in ((host, patient), (patient, host)):
        assert other.peer_id is not None
        assert me.links[other.peer_id].state == "connected"


async def finish(call: Call) -> None:
    await call.host.end()
    assert (await call.patient.wait_for("session-ended")).data["reason"] == "ended"
    await call.host.close()
    await call.patient.close()


@pytest.fixture
async def in_process(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    test_client = await make_client(settings)
    try:
        yield test_client
    finally:
        await test_client.close()


async def test_checkup_hd_video_and_data_both_ways(in_process: TestClient[Any, Any]) -> None:
    session_id, doc, patient = await book_in_process(in_process)
    host, guest = sdk(in_process, doc.access_token), sdk(in_process, patient.access_token)
    try:
        call = await enter(session_id, host, guest)
        await host.admit("peer-nobody")  # errors (seq 0) reach the events too
        assert (await host.wait_for("error")).data["code"] == "not_waiting"
        await hd_both_ways(call)
        await call.patient.chat("can you hear me?")
        assert (await call.host.wait_for("chat")).data["text"] == "can you hear me?"
        assert call.host.peer_media == {guest.peer_id: (True, True)}
        await call.patient.media(audio=False, video=True)
        told = await call.host.wait_for("peer-media", peer=guest.peer_id)
        assert (told.data["audio"], told.data["video"]) == (False, True)
        assert call.host.peer_media == {guest.peer_id: (False, True)}
        await finish(call)
    finally:
        await host.close()
        await guest.close()


async def test_socket_drop_resumes_without_losing_the_call(
    in_process: TestClient[Any, Any],
) -> None:
    session_id, doc, patient = await book_in_process(in_process)
    host, guest = sdk(in_process, doc.access_token), sdk(in_process, patient.access_token)
    try:
        call = await enter(session_id, host, guest)
        assert guest.peer_id is not None
        await asyncio.wait_for(host.links[guest.peer_id].connected.wait(), 20)
        peer_id, before = guest.peer_id, guest.last_seq
        ws = guest._ws
        assert ws is not None and ws._response.connection is not None
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
        back = await guest.wait_for("reconnected")
        assert back.data["resumed"] is True and guest.peer_id == peer_id
        await host.wait_for("peer-resumed", peer=peer_id)
        await host.chat("still there?")
        assert (await guest.wait_for("chat")).data["text"] == "still there?"
        assert guest.last_seq > before
        assert host.links[peer_id].state == "connected"  # media never depended on the socket
        await finish(call)
    finally:
        await host.close()
        await guest.close()


async def test_a_tv_that_took_a_call_resumes_in_it_after_a_drop(
    in_process: TestClient[Any, Any],
) -> None:
    """A TV's idle connection (access token) accepts a call; its socket drops; the SDK resumes
    it in the call with the token of ``resume-token``, as the same peer, media untouched."""
    grandma = await signed_up(in_process, "family")
    grandson = await signed_up(in_process, "family")
    session_id = await family_call(in_process, grandson, grandma, "Hi Grandma")
    base = str(in_process.make_url("")).rstrip("/")
    tv, caller = sdk(in_process, grandma.access_token), sdk(in_process, grandson.access_token)
    try:
        await tv.connect(grandma.access_token, base.replace("http", "ws", 1) + "/ws", join=False)
        await caller.join_session(session_id)
        await caller.wait_for("joined")
        ring = await tv.wait_for("incoming-call")
        await tv.accept_call(ring.data["session_id"])
        await tv.wait_for("joined")
        await tv.wait_for("resume-token")
        assert tv.session_id == session_id and tv.peer_id is not None
        await asyncio.wait_for(caller.links[tv.peer_id].connected.wait(), 20)
        peer_id = tv.peer_id
        ws = tv._ws
        assert ws is not None and ws._response.connection is not None
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
        back = await tv.wait_for("reconnected")
        assert back.data["resumed"] is True and back.data["session_id"] == session_id
        assert tv.peer_id == peer_id
        await caller.wait_for("peer-resumed", peer=peer_id)
        await caller.chat("can you hear me?")
        assert (await tv.wait_for("chat")).data["text"] == "can you hear me?"
        assert caller.links[peer_id].state == "connected"
    finally:
        await tv.close()
        await caller.close()


async def test_refused_resume_comes_back_as_a_new_peer(
    in_process: TestClient[Any, Any],
) -> None:
    session_id, doc, patient = await book_in_process(in_process)
    host, guest = sdk(in_process, doc.access_token), sdk(in_process, patient.access_token)
    try:
        call = await enter(session_id, host, guest)
        old = host.peer_id
        await hd_both_ways(call)
        host._resume_token = "x" * 5000  # the server refuses this hello: come back fresh
        ws = host._ws
        assert ws is not None and ws._response.connection is not None
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await host.wait_for("resume-failed")
        await host.wait_for("joined")
        assert host.peer_id not in (None, old)
        assert (await guest.wait_for("peer-left", peer=old)).data["reason"] == "replaced"
        await guest.wait_for("peer-joined", peer=host.peer_id)
        assert list(guest.links) == [host.peer_id]
        await hd_both_ways(call)
        await finish(call)
    finally:
        await host.close()
        await guest.close()


async def test_glare_polite_peer_starts_over_and_impolite_peer_ignores() -> None:
    """Both peers offer at once (offers held until both are out): aiortc has no rollback."""
    events: dict[str, list[Event]] = {"peer-a": [], "peer-b": []}
    links: dict[str, PeerLink] = {}
    held: list[dict[str, Any]] = []

    def sender(me: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(message: dict[str, Any]) -> None:
            relayed = {**message, "from": me}
            if message["type"] == "offer" and len(held) < 2:
                held.append(relayed)
                if len(held) == 2:
                    for offer in held:
                        links[offer["to"]].deliver(offer)
                return
            links[message["to"]].deliver(relayed)

        return send

    for me, other in (("peer-a", "peer-b"), ("peer-b", "peer-a")):
        links[me] = PeerLink(
            me,
            other,
            configuration=rtc_configuration([]),
            tracks=lambda: [PatternTrack()],
            send=sender(me),
            emit=events[me].append,
        )
    a, b = links["peer-a"], links["peer-b"]
    assert b.polite and not a.polite  # the greater peer id is polite
    try:
        a.offer()
        b.offer()
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 20)
        assert (b.replacements, b.ignored_offers) == (1, 0)
        assert (a.replacements, a.ignored_offers) == (0, 1)
        for link in (a, b):
            channel = link.channel
            assert channel is not None
            await _until(lambda: channel.readyState == "open")  # noqa: B023
            channel.send(f"hi from {link.local_id}")
        await _until(lambda: all(_got(events[p], "channel-message") for p in events))
        assert _got(events["peer-a"], "channel-message")[0].data["data"] == "hi from peer-b"
        assert _got(events["peer-b"], "channel-message")[0].data["data"] == "hi from peer-a"
        tracks = [_got(events[p], "track")[-1].track for p in events]
        for track in tracks:
            assert track is not None
            frames = await frames_of(track, 10)
            assert {(f.width, f.height) for f in frames} == {(1280, 720)}
    finally:
        await a.close()
        await b.close()


def _got(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


# Two broker processes on one redis-server


def _login(node: BrokerProcess, email: str) -> str:
    reply = node.call("POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


def book_on_redis(
    launcher: BrokerLauncher, redis_url: str, tmp_path: Path
) -> tuple[BrokerProcess, BrokerProcess, str, str, str]:
    """Two nodes, a clinic with an admin and a clinician, a patient and a check-up."""
    flags = ["--redis-url", redis_url]
    store = ["--data-dir", str(tmp_path / "cli"), *flags]
    made = launcher.cli("clinic", "add", "--name", "Media Clinic", *store)
    clinic_id = made.stdout.strip().splitlines()[-1]
    admin, doc = (f"{r}-{secrets.token_hex(3)}@example.org" for r in ("admin", "doc"))
    for email, role in ((admin, "admin"), (doc, "clinician")):
        launcher.cli(
            "user",
            "add",
            *("--email", email, "--name", role.title(), "--role", role),
            *("--clinic", clinic_id, *store),
            env={"BROKER_NEW_PASSWORD": PASSWORD},
        )
    node_a = launcher.start(tmp_path / "a", flags)
    node_b = launcher.start(tmp_path / "b", flags)
    patient = f"patient-{secrets.token_hex(3)}@example.org"
    body = {"email": patient, "password": PASSWORD, "display_name": "P", "role": "patient"}
    registered = node_b.call("POST", "/api/v1/auth/register", body)
    assert registered.status == 201, registered.body
    doc_token = _login(node_a, doc)
    doc_id = node_a.call("GET", "/api/v1/me", token=doc_token).json()["id"]
    start, end = window()
    booked = node_a.call(
        "POST",
        "/api/v1/sessions",
        {
            "kind": "checkup",
            "title": "Check-up",
            "start": start,
            "end": end,
            "clinician_id": doc_id,
            "patient_id": registered.json()["id"],
        },
        token=_login(node_a, admin),
    )
    assert booked.status == 201, booked.body
    return node_a, node_b, booked.json()["items"][0]["id"], doc, patient


@contextlib.asynccontextmanager
async def call_on_two_nodes(
    launcher: BrokerLauncher, redis_url: str, tmp_path: Path
) -> AsyncIterator[Call]:
    """The check-up booked on two nodes of one Redis, its clinician on node A and its patient
    on node B, admitted; both clients closed at the end."""
    node_a, node_b, session_id, doc, patient = await asyncio.to_thread(
        book_on_redis, launcher, redis_url, tmp_path
    )
    host = await BrokerClient.login(node_a.url, doc, PASSWORD, tracks=[PatternTrack()])
    guest = await BrokerClient.login(node_b.url, patient, PASSWORD, tracks=[PatternTrack()])
    try:
        call = await enter(session_id, host, guest)
        assert str(node_a.port) in host._url and str(node_b.port) in guest._url
        yield call
    finally:
        await host.close()
        await guest.close()


async def test_checkup_across_two_nodes_on_redis(
    broker_launcher: BrokerLauncher, redis_url: str, tmp_path: Path
) -> None:
    async with call_on_two_nodes(broker_launcher, redis_url, tmp_path) as call:
        await hd_both_ways(call)
        await finish(call)


async def test_an_offer_redis_did_not_take_is_sent_again(
    broker_launcher: BrokerLauncher, durable_redis: Any, tmp_path: Path
) -> None:
    """Redis goes away mid-call and the guest renegotiates: the broker answers the offer with
    ``unavailable`` (its socket kept), the SDK sends it again once Redis is back, and the
    host's answer completes the negotiation."""
    url, _, stop, start = durable_redis
    async with call_on_two_nodes(broker_launcher, url, tmp_path) as call:
        host, guest = call.host, call.patient
        assert host.peer_id is not None
        await guest.wait_for("channel-open", peer=host.peer_id, timeout=20)
        link = guest.links[host.peer_id]
        await _until(lambda: link.pc.signalingState == "stable")
        await asyncio.to_thread(stop)
        link.offer()  # a renegotiation while Redis is away
        refused = await guest.wait_for("resending", timeout=15)
        assert refused.data["code"] == "unavailable"
        assert link.pc.signalingState == "have-local-offer"
        await asyncio.to_thread(start)
        await _until(lambda: link.pc.signalingState == "stable", timeout=20)  # answered
        assert link.pc.remoteDescription is not None
        assert link.pc.remoteDescription.type == "answer"
        assert not [e for _, e in guest._history if e.type == "error"]  # nothing given up
        await finish(call)


# Relay only, through a real coturn


@pytest.fixture
async def with_turn(tmp_path: Path, coturn: TurnServer) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(data_dir=tmp_path, turn_urls=(coturn.url,), turn_secret=coturn.secret)
    test_client = await make_client(settings)
    try:
        yield test_client
    finally:
        await test_client.close()


def relay_only_sdp(client: BrokerClient, peer: str) -> None:
    sdp = client.links[peer].pc.localDescription.sdp
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" typ relay" in line for line in candidates), candidates


async def test_relay_only_through_coturn(
    with_turn: TestClient[Any, Any], coturn: TurnServer
) -> None:
    session_id, doc, patient = await book_in_process(with_turn)
    host = sdk(with_turn, doc.access_token, relay_only=True)
    guest = sdk(with_turn, patient.access_token, relay_only=True)
    try:
        call = await enter(session_id, host, guest)
        assert host.peer_id is not None and guest.peer_id is not None
        servers = host.ice_servers  # from welcome: TURN REST credentials for this peer
        assert [s.urls for s in servers] == [(coturn.url,)]
        assert (servers[0].username or "").endswith(":" + host.peer_id)
        await hd_both_ways(call, timeout=30)
        relay_only_sdp(host, guest.peer_id)
        relay_only_sdp(guest, host.peer_id)
        await finish(call)
    finally:
        await host.close()
        await guest.close()


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_bad_turn_credentials_never_connect(
    with_turn: TestClient[Any, Any], coturn: TurnServer, kind: str
) -> None:
    now = datetime.now(UTC)
    if kind == "expired":
        username, credential = turn_credentials(coturn.secret, "peer", now - timedelta(hours=2), 60)
    else:
        username, credential = turn_credentials("not-the-secret", "peer", now, 3600)
    bad = [IceServer((coturn.url,), username, credential)]
    session_id, doc, patient = await book_in_process(with_turn)
    host = sdk(with_turn, doc.access_token, relay_only=True, ice_servers=bad)
    guest = sdk(with_turn, patient.access_token, relay_only=True, ice_servers=bad)
    try:
        await enter(session_id, host, guest)
        with pytest.raises(TimeoutError):
            await host.wait_for(
                "connection-state", where=lambda e: e.data["state"] == "connected", timeout=5
            )
        with pytest.raises(TimeoutError):
            await guest.wait_for(
                "connection-state", where=lambda e: e.data["state"] == "connected", timeout=0.1
            )
        for me, other in ((host, guest), (guest, host)):
            assert other.peer_id is not None
            link = me.links[other.peer_id]
            assert link.state != "connected" and not link.connected.is_set()
            assert "a=candidate:" not in link.pc.localDescription.sdp  # no relay allocated
        assert "check_stun_auth" in coturn.log_path.read_text()  # coturn refused them
    finally:
        await host.close()
        await guest.close()
