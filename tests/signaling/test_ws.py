"""The signaling socket end to end over real WebSockets (one node, embedded store)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from broker.app import SIGNALING
from broker.config import Settings
from broker.domain import Role
from signaling import protocol
from tests.support.app import Account, app_services, family_call, signed_up, staff_account
from tests.support.wsclient import Peer, mixed_relay_in_order, open_peer

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
CAND = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host", "sdpMid": "0"}


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path, signaling_grace=2, heartbeat=5)


async def connect(client: Any, token: str | None, resume: dict[str, Any] | None = None) -> Peer:
    return await open_peer(client, "/ws", token, resume)


async def refused(client: Any, token: str) -> str:
    """Say hello with ``token``: the error code, after checking the socket closed with 4003."""
    peer = await connect(client, None)
    await peer.send(type="hello", token=token)
    code = str((await peer.expect("error"))["code"])
    await asyncio.sleep(0.2)
    assert peer.ws.close_code == protocol.CLOSE_AUTH_FAILED
    return code


async def join_token(client: Any, session_id: str, who: Account) -> str:
    resp = await client.post(f"/api/v1/sessions/{session_id}/join", headers=who.headers)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["join_token"])


@pytest.fixture
async def checkup(client: Any) -> tuple[str, Account, Account]:
    admin = await staff_account(client)
    doc = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
    patient = await signed_up(client, "patient")
    start = datetime.now(UTC) + timedelta(minutes=5)
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "t",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "clinician_id": doc.user_id,
            "patient_id": patient.user_id,
        },
        headers=admin.headers,
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["items"][0]["id"], doc, patient


async def in_call(client: Any, checkup: Any) -> tuple[Peer, Peer]:
    """The clinician in the call and the patient admitted from the waiting room."""
    session_id, doc, patient = checkup
    host = await connect(client, await join_token(client, session_id, doc))
    await host.send(type="join")
    await host.expect("joined")
    guest = await connect(client, await join_token(client, session_id, patient))
    await guest.send(type="join")
    waiting = await guest.expect("waiting")
    assert waiting["position"] == 1
    room = await host.expect("waiting-room")
    assert [p["peer_id"] for p in room["waiting"]] == [guest.welcome["peer_id"]]
    await host.send(type="admit", peer=guest.welcome["peer_id"])
    await guest.expect("admitted")
    joined = await guest.expect("joined")
    assert [p["peer_id"] for p in joined["peers"]] == [host.welcome["peer_id"]]
    assert joined["quality"]["width"] == 1280
    await host.expect("peer-joined")
    return host, guest


async def test_waiting_room_admit_relay_and_chat(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    session = await app_services(client).store.get_session(checkup[0])
    assert session is not None and session.status.value == "arrived"
    await guest.send(type="offer", to=host.welcome["peer_id"], sdp=SDP, id="o1")
    offer = await host.expect("offer")
    assert offer["from"] == guest.welcome["peer_id"] and offer["sdp"] == SDP
    assert "to" not in offer
    await host.send(type="answer", to=guest.welcome["peer_id"], sdp=SDP)
    assert (await guest.expect("answer"))["from"] == host.welcome["peer_id"]
    for _ in range(5):
        await guest.send(type="candidate", to=host.welcome["peer_id"], candidate=CAND)
    await guest.send(type="candidate", to=host.welcome["peer_id"], candidate=None)
    seqs = [(await host.expect("candidate"))["seq"] for _ in range(6)]
    assert seqs == sorted(seqs)
    await guest.send(type="chat", text="hello doctor")
    assert (await host.expect("chat"))["text"] == "hello doctor"
    await host.send(type="end")
    assert (await guest.expect("session-ended"))["reason"] == "ended"
    trail = await app_services(client).store.list_audit(checkup[0])
    assert [e.action for e in trail if e.action != "join_token_issued"] == [
        "joined",
        "joined",
        "admitted",
        "ended",
    ]
    await host.close()
    await guest.close()


async def test_microphone_and_camera_state_reaches_the_others_and_later_arrivals(
    client: Any, checkup: Any
) -> None:
    """`media` stays on the peer's record: the hosts see a waiting peer's in the waiting room,
    the peers in the call get `peer-media`, and whoever arrives later sees it in `joined`."""
    session_id, doc, patient = checkup
    host = await connect(client, await join_token(client, session_id, doc))
    await host.send(type="join")
    assert (await host.expect("joined"))["peers"] == []
    guest = await connect(client, await join_token(client, session_id, patient))
    await guest.send(type="media", id="m0", audio=False, video=False)  # before join: refused
    error = await guest.expect("error")
    assert (error["code"], error["ref"]) == ("not_joined", "m0")
    await guest.send(type="join")
    await guest.expect("waiting")
    room = await host.expect("waiting-room")
    assert [(p["audio"], p["video"]) for p in room["waiting"]] == [(True, True)]

    await guest.send(type="media", audio=False, video=True)  # muted while waiting
    room = await host.expect("waiting-room")
    assert [(p["audio"], p["video"]) for p in room["waiting"]] == [(False, True)]
    await host.send(type="admit", peer=guest.welcome["peer_id"])
    joined = await guest.expect("joined")
    assert [(p["peer_id"], p["audio"], p["video"]) for p in joined["peers"]] == [
        (host.welcome["peer_id"], True, True)
    ]
    arrived = (await host.expect("peer-joined"))["peer"]
    assert (arrived["peer_id"], arrived["audio"], arrived["video"]) == (
        guest.welcome["peer_id"],
        False,
        True,
    )

    await host.send(type="media", audio=True, video=False)
    told = await guest.expect("peer-media")
    assert (told["from"], told["audio"], told["video"]) == (host.welcome["peer_id"], True, False)
    await guest.send(type="media", audio=False, video=True)  # no change: nothing is sent
    await guest.send(type="chat", text="can you see me?")
    while (message := await asyncio.wait_for(host.inbox.get(), 5))["type"] != "chat":
        assert message["type"] != "peer-media"

    await guest.send(type="media", id="m1", audio="off", video=True)
    error = await guest.expect("error")
    assert (error["code"], error["ref"]) == ("invalid_message", "m1")
    await host.close()
    await guest.close()


async def test_messages_keep_their_order_whichever_lane_takes_them(
    client: Any, checkup: Any
) -> None:
    """Candidates are relayed in the read callback, chat by the handler task: sent back to
    back, they still arrive in the order sent."""
    host, guest = await in_call(client, checkup)
    await mixed_relay_in_order(guest, host, count=30, chat_every=3)
    # The fast lane is on for both sockets (it would be off on another aiohttp).
    sockets = client.app[SIGNALING].sockets
    assert len(sockets) == 2 and all(ws.intake.lane is not None for ws in sockets)


async def test_no_hello_is_closed(client: Any) -> None:
    ws = await client.ws_connect("/ws")
    msg = await ws.receive(timeout=8)
    assert json.loads(msg.data)["code"] == protocol.HELLO_TIMEOUT
    closed = await ws.receive(timeout=3)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == protocol.CLOSE_HELLO_TIMEOUT


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
async def test_bad_token_is_refused(client: Any, token: str) -> None:
    assert await refused(client, token) == protocol.INVALID_TOKEN


async def test_other_sessions_token_cannot_reach_this_call(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    other_admin = await staff_account(client)
    other_doc = await staff_account(client, other_admin.clinic_id, Role.CLINICIAN)
    other_patient = await signed_up(client, "patient")
    start = datetime.now(UTC) + timedelta(minutes=5)
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "x",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "clinician_id": other_doc.user_id,
            "patient_id": other_patient.user_id,
        },
        headers=other_admin.headers,
    )
    other_id = (await resp.json())["items"][0]["id"]
    intruder = await connect(client, await join_token(client, other_id, other_doc))
    await intruder.send(type="join")
    await intruder.expect("joined")
    await intruder.send(type="offer", to=host.welcome["peer_id"], sdp=SDP, id="x1")
    err = await intruder.expect("error")
    assert (err["code"], err["ref"]) == (protocol.UNKNOWN_PEER, "x1")
    await intruder.send(type="chat", text="spoof", **{"from": guest.welcome["peer_id"]})
    assert (await intruder.expect("error"))["code"] == protocol.INVALID_MESSAGE
    seen = [host.inbox.get_nowait()["type"] for _ in range(host.inbox.qsize())]
    assert "offer" not in seen and "chat" not in seen


async def test_bad_messages_get_errors_with_ref(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    cases = [
        ('{"type":"offer"', protocol.MALFORMED),
        (json.dumps({"type": "teleport", "id": "r1"}), protocol.UNKNOWN_TYPE),
        (
            json.dumps({"type": "offer", "to": host.welcome["peer_id"], "sdp": "nope", "id": "r2"}),
            protocol.INVALID_SDP,
        ),
        (
            json.dumps(
                {
                    "type": "candidate",
                    "to": host.welcome["peer_id"],
                    "candidate": {"candidate": "junk", "sdpMid": "0"},
                }
            ),
            protocol.INVALID_CANDIDATE,
        ),
        (json.dumps({"type": "chat", "text": "x" * 70000}), protocol.MESSAGE_TOO_LARGE),
        (json.dumps({"type": "admit", "peer": host.welcome["peer_id"]}), protocol.FORBIDDEN),
        # relays the fast lane leaves to the handler task: same answers as always
        (json.dumps({"type": "offer", "to": "no such/peer", "sdp": SDP}), protocol.INVALID_MESSAGE),
        (json.dumps({"type": "offer", "to": "p-nobody", "sdp": SDP}), protocol.UNKNOWN_PEER),
    ]
    for raw, code in cases:
        await guest.ws.send_str(raw)
        assert (await guest.expect("error"))["code"] == code, raw
    await guest.send(type="ping", id="p")
    assert (await guest.expect("pong"))["ref"] == "p"


async def test_flood_is_rate_limited_then_closed(client: Any, checkup: Any) -> None:
    _host, guest = await in_call(client, checkup)
    for _ in range(600):
        await guest.send(type="ping")
    errors = 0
    with pytest.raises(asyncio.TimeoutError):
        while True:
            msg = await asyncio.wait_for(guest.inbox.get(), 3)
            errors += msg.get("code") == protocol.RATE_LIMITED
    assert errors > 0
    assert guest.ws.close_code == protocol.CLOSE_ABUSE


async def test_drop_resume_replays_missed_messages(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    resume = {
        "peer_id": guest.welcome["peer_id"],
        "token": guest.welcome["resume_token"],
        "last_seq": guest.last_seq,
    }
    await guest.ws.close()
    await host.expect("peer-reconnecting")
    for i in range(3):
        await host.send(type="chat", text=f"are you there {i}")
    back = await connect(client, await join_token(client, checkup[0], checkup[2]), resume)
    assert back.welcome["resumed"] is True
    assert back.welcome["peer_id"] == resume["peer_id"]
    texts = [(await back.expect("chat"))["text"] for _ in range(3)]
    assert texts == [f"are you there {i}" for i in range(3)]
    await host.expect("peer-resumed")
    await host.send(type="offer", to=back.welcome["peer_id"], sdp=SDP)
    assert (await back.expect("offer"))["from"] == host.welcome["peer_id"]


async def test_dropped_peer_leaves_after_grace(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    await guest.ws.close()
    await host.expect("peer-reconnecting")
    left = await host.expect("peer-left", timeout=6)
    assert left["reason"] == "dropped"


async def test_second_device_replaces_the_first(client: Any, checkup: Any) -> None:
    host, guest = await in_call(client, checkup)
    phone = await connect(client, await join_token(client, checkup[0], checkup[2]))
    await phone.send(type="join")
    await phone.expect("waiting")
    await asyncio.sleep(0.3)
    assert guest.ws.close_code == protocol.CLOSE_REPLACED
    assert (await host.expect("peer-left"))["reason"] == "replaced"


async def test_cancelling_tells_the_waiting_room_at_once(client: Any, checkup: Any) -> None:
    session_id, doc, patient = checkup
    waiting = await connect(client, await join_token(client, session_id, patient))
    await waiting.send(type="join")
    await waiting.expect("waiting")
    resp = await client.post(f"/api/v1/sessions/{session_id}/cancel", headers=doc.headers)
    assert resp.status == 200
    assert (await waiting.expect("session-ended"))["reason"] == "cancelled"


async def test_family_call_rings_an_idle_tv(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    tv = await connect(client, grandma.access_token)
    assert tv.welcome["session_id"] is None
    session_id = await family_call(client, grandson, grandma, "Hi Grandma")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    await caller.expect("joined")
    ring = await tv.expect("incoming-call")
    assert ring["session_id"] == session_id and ring["from_user"] == grandson.user_id
    assert ring["auto_answer"] is False
    await tv.send(type="accept", session_id=session_id)
    joined = await tv.expect("joined")
    assert [p["peer_id"] for p in joined["peers"]] == [caller.welcome["peer_id"]]
    assert (await caller.expect("peer-joined"))["peer"]["subject"] == grandma.user_id


async def test_a_tv_that_took_a_call_on_its_idle_socket_resumes_in_it(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    tv = await connect(client, grandma.access_token)
    session_id = await family_call(client, grandson, grandma, "Hi Grandma")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    await caller.expect("joined")
    await tv.expect("incoming-call")
    await tv.send(type="accept", session_id=session_id)
    await tv.expect("joined")
    token = await tv.expect("resume-token")
    assert token["session_id"] == session_id
    assert token["resume_token"] != tv.welcome["resume_token"]
    await caller.expect("peer-joined")
    resume = {
        "peer_id": tv.welcome["peer_id"],
        "token": token["resume_token"],
        "last_seq": tv.last_seq,
    }
    await tv.ws.close()
    await caller.expect("peer-reconnecting")
    await caller.send(type="chat", text="still there?")
    await caller.send(type="offer", to=resume["peer_id"], sdp=SDP)
    # the welcome's token (for the idle connection) does not put it back in the call...
    idle = dict(resume, token=tv.welcome["resume_token"])
    fresh = await connect(client, grandma.access_token, idle)
    assert fresh.welcome["resumed"] is False and fresh.welcome["session_id"] is None
    await fresh.ws.close()
    # ...nor does the call's token with someone else's access token
    grandson_tv = await connect(client, grandson.access_token, resume)
    assert grandson_tv.welcome["resumed"] is False
    await grandson_tv.ws.close()
    # the call's token with her own access token does, with what she missed, in order
    back = await connect(client, grandma.access_token, resume)
    assert back.welcome["resumed"] is True
    assert back.welcome["peer_id"] == resume["peer_id"]
    assert back.welcome["session_id"] == session_id
    assert (await back.expect("chat"))["text"] == "still there?"
    assert (await back.expect("offer"))["from"] == caller.welcome["peer_id"]
    await caller.expect("peer-resumed")
    await back.send(type="answer", to=caller.welcome["peer_id"], sdp=SDP)
    assert (await caller.expect("answer"))["from"] == resume["peer_id"]


async def test_slow_reader_is_disconnected_not_buffered(client: Any, checkup: Any) -> None:
    session_id, doc, patient = checkup
    host = await connect(client, await join_token(client, session_id, doc))
    await host.send(type="join")
    await host.expect("joined")
    slow = await client.ws_connect("/ws")  # says hello, then never reads again
    await slow.send_str(
        json.dumps({"type": "hello", "token": await join_token(client, session_id, patient)})
    )
    welcome = json.loads((await slow.receive(timeout=5)).data)
    await slow.send_str(json.dumps({"type": "join"}))
    await host.expect("waiting-room")
    await host.send(type="admit", peer=welcome["peer_id"])
    await host.expect("peer-joined")
    big = SDP + "a=x-pad:" + "p" * 60000 + "\r\n"
    deadline = asyncio.get_running_loop().time() + 30
    left = None
    while left is None and asyncio.get_running_loop().time() < deadline:
        await host.send(type="offer", to=welcome["peer_id"], sdp=big)
        await asyncio.sleep(0.02)
        while not host.inbox.empty():
            msg = host.inbox.get_nowait()
            if msg["type"] in ("peer-reconnecting", "peer-left"):
                left = msg
    assert left is not None, "the server kept buffering for a peer that does not read"
    assert left["peer_id"] == welcome["peer_id"]


async def test_expired_join_token_is_refused(client: Any, checkup: Any) -> None:
    session_id, _, patient = checkup
    tokens = app_services(client).tokens
    stale, _ = tokens.issue(
        patient.user_id,
        "citycall-signaling",
        "join",
        60,
        {"sid": session_id, "role": "patient"},
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    assert await refused(client, stale) == protocol.TOKEN_EXPIRED


async def test_expired_access_token_is_refused(client: Any) -> None:
    tv = await signed_up(client, "family")
    stale, _ = app_services(client).tokens.issue_access(
        tv.user_id, Role.FAMILY, None, now=datetime.now(UTC) - timedelta(days=1)
    )
    assert await refused(client, stale) == protocol.TOKEN_EXPIRED


async def test_tokens_of_other_kinds_are_refused(client: Any) -> None:
    tv = await signed_up(client, "family")
    tokens = app_services(client).tokens
    resume, _ = tokens.issue("peer-1", "citycall-resume", "resume", 60, {"sid": "", "subj": "x"})
    # Says "access" but is not one (its audience is signaling's): checked, not trusted.
    mislabelled, _ = tokens.issue(
        tv.user_id, "citycall-signaling", "access", 60, {"role": "family"}
    )
    forged = tv.access_token.rsplit(".", 1)[0] + "." + "A" * 86
    for token in (resume, mislabelled, forged):
        assert await refused(client, token) == protocol.INVALID_TOKEN


async def test_trusted_contact_is_auto_answered(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    resp = await client.put(
        "/api/v1/me/trusted-contacts",
        json={"user_ids": [grandson.user_id]},
        headers=grandma.headers,
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user_ids"] == [grandson.user_id]
    tv = await connect(client, grandma.access_token)
    session_id = await family_call(client, grandson, grandma, "Hi")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    assert (await tv.expect("incoming-call"))["auto_answer"] is True
    doctor = await staff_account(client)
    refused = await client.put(
        "/api/v1/me/trusted-contacts", json={"user_ids": [grandson.user_id]}, headers=doctor.headers
    )
    assert refused.status == 403


async def test_a_tv_coming_online_during_a_call_is_rung(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    session_id = await family_call(client, grandson, grandma, "Late TV")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    await caller.expect("joined")
    tv = await connect(client, grandma.access_token)
    ring = await tv.expect("incoming-call")
    assert ring["session_id"] == session_id
    assert ring["from_name"] == "Test Person"


async def test_a_tv_coming_online_after_the_call_is_not_rung(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    session_id = await family_call(client, grandson, grandma, "Over already")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    await caller.expect("joined")
    await caller.send(type="leave")
    await asyncio.sleep(0.3)
    tv = await connect(client, grandma.access_token)
    with pytest.raises(TimeoutError):
        await tv.expect("incoming-call", timeout=0.5)
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")  # the caller tries again: now the TV rings
    assert (await tv.expect("incoming-call"))["session_id"] == session_id


async def test_a_tv_is_not_rung_for_a_call_its_user_hung_up_on(client: Any) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    session_id = await family_call(client, grandson, grandma, "Hung up")
    caller = await connect(client, await join_token(client, session_id, grandson))
    await caller.send(type="join")
    await caller.expect("joined")
    phone = await connect(client, await join_token(client, session_id, grandma))
    await phone.send(type="join")
    await caller.expect("peer-joined")
    await phone.send(type="leave")
    await caller.expect("peer-left")
    tv = await connect(client, grandma.access_token)
    with pytest.raises(TimeoutError):
        await tv.expect("incoming-call", timeout=0.5)
