"""Many nodes on one Redis: a call across two broker processes survives a node being killed,
a node shutting down, and Redis restarting; nothing is delivered twice or lost."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.support.broker_proc import BrokerLauncher, BrokerProcess
from tests.support.wsclient import Peer, mixed_relay_in_order, open_peer

DEMO_PASSWORD = "citycall-demo-1"


def _token(node: BrokerProcess, email: str) -> str:
    reply = node.call("POST", "/api/v1/auth/login", {"email": email, "password": DEMO_PASSWORD})
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


def _join(node: BrokerProcess, access: str, session_id: str) -> str:
    reply = node.call("POST", f"/api/v1/sessions/{session_id}/join", {}, token=access)
    assert reply.status == 200, reply.body
    return str(reply.json()["join_token"])


def _ws(node: BrokerProcess) -> str:
    return node.url.replace("http", "ws", 1) + "/ws"


class Call:
    """The demo check-up with the clinician and the patient, each on a node of their own."""

    def __init__(self, a: BrokerProcess, b: BrokerProcess) -> None:
        self.a, self.b = a, b
        self.doc = _token(a, "clinician@demo.citycall.test")
        self.patient = _token(b, "patient@demo.citycall.test")
        sessions = a.call("GET", "/api/v1/sessions", token=self.patient).json()["items"]
        self.session_id = next(s["id"] for s in sessions if s["title"].startswith("Blood"))

    async def start(self, http: aiohttp.ClientSession) -> tuple[Peer, Peer]:
        host = await open_peer(http, _ws(self.b), _join(self.b, self.doc, self.session_id))
        await host.send(type="join")
        await host.expect("joined")
        guest = await open_peer(http, _ws(self.a), _join(self.a, self.patient, self.session_id))
        await guest.send(type="join")
        await guest.expect("waiting")
        await host.expect("waiting-room")
        await host.send(type="admit", peer=guest.peer_id)
        await guest.expect("joined")
        await host.expect("peer-joined")
        # the admit's last step: the host sees the waiting room empty (a test that stops Redis
        # next would otherwise catch the admit half done, and get its error)
        assert (await host.expect("waiting-room"))["waiting"] == []
        return host, guest


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


@pytest.fixture
def two_nodes(
    broker_launcher: BrokerLauncher, redis_server: str, tmp_path: Path
) -> tuple[BrokerProcess, BrokerProcess]:
    _flush(redis_server)
    flags = ["--redis-url", redis_server, "--signaling-grace", "30"]
    a = broker_launcher.start(tmp_path / "a", [*flags, "--demo"])
    b = broker_launcher.start(tmp_path / "b", flags)
    return a, b


async def _chats(peer: Peer, n: int, timeout: float = 10.0) -> list[str]:
    return [(await peer.expect("chat", timeout))["text"] for _ in range(n)]


async def _chat_until_delivered(sender: Peer, to: Peer, text: str) -> list[str]:
    """Send ``text`` once a second until ``to`` gets one (Redis coming back); what it got."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await sender.send(type="chat", text=text)
        try:
            return await _chats(to, 1, timeout=1.0)
        except TimeoutError:
            continue
    return []


async def test_call_across_nodes_survives_a_killed_node(two_nodes: Any) -> None:
    a, b = two_nodes
    call = Call(a, b)
    async with aiohttp.ClientSession() as http:
        host, guest = await call.start(http)
        await host.send(type="chat", text="before")
        assert await _chats(guest, 1) == ["before"]
        await guest.send(type="media", audio=False, video=True)  # node A -> the host on B
        told = await host.expect("peer-media")
        assert (told["from"], told["audio"], told["video"]) == (guest.peer_id, False, True)
        resume = guest.resume_info()
        a.proc.kill()  # node A dies without a word
        a.proc.wait(10)
        await host.expect("peer-reconnecting", timeout=20)
        for i in range(3):
            await host.send(type="chat", text=f"while away {i}")
        back = await open_peer(http, _ws(b), _join(b, call.patient, call.session_id), resume)
        assert back.welcome["resumed"] is True
        assert await _chats(back, 3) == [f"while away {i}" for i in range(3)]
        await host.expect("peer-resumed")
        await back.send(type="media", audio=True, video=True)  # a change: its record kept off
        told = await host.expect("peer-media")
        assert (told["from"], told["audio"], told["video"]) == (back.peer_id, True, True)
        await back.send(type="chat", text="I am back")
        heard = await host.expect("chat")
        while heard["from"] != back.peer_id:  # the host's own chats come back to it too
            heard = await host.expect("chat")
        assert heard["text"] == "I am back"
        await asyncio.sleep(0.5)
        rest = [back.inbox.get_nowait() for _ in range(back.inbox.qsize())]
        assert not [m for m in rest if m["type"] == "chat" and m["text"] != "I am back"]


async def test_messages_across_nodes_keep_their_order_whichever_lane_takes_them(
    two_nodes: Any,
) -> None:
    """Candidates go out in the read callback (checked from the node's cache, the send script
    written at once), chat through the handler task: across nodes they still arrive in order."""
    a, b = two_nodes
    async with aiohttp.ClientSession() as http:
        host, guest = await Call(a, b).start(http)
        await mixed_relay_in_order(guest, host, count=60, chat_every=4, timeout=10)
        await host.close()
        await guest.close()


async def test_a_tv_coming_online_on_another_node_is_rung(two_nodes: Any) -> None:
    a, b = two_nodes
    grandson = _token(a, "grandson@demo.citycall.test")
    grandma = _token(b, "grandma@demo.citycall.test")
    grandma_id = b.call("GET", "/api/v1/me", token=grandma).json()["id"]
    start = datetime.now(UTC) + timedelta(minutes=2)
    booked = a.call(
        "POST",
        "/api/v1/sessions",
        {
            "kind": "family_call",
            "title": "Across nodes",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),  # before the demo's call
            "participant_ids": [grandma_id],
        },
        token=grandson,
    )
    assert booked.status == 201, booked.body
    session_id = booked.json()["items"][0]["id"]
    async with aiohttp.ClientSession() as http:
        caller = await open_peer(http, _ws(a), _join(a, grandson, session_id))
        await caller.send(type="join")
        await caller.expect("joined")
        tv = await open_peer(http, _ws(b), grandma)  # the TV comes online on the other node
        assert (await tv.expect("incoming-call"))["session_id"] == session_id
        await caller.close()
        await tv.close()


async def test_shutdown_sends_clients_to_another_node(two_nodes: Any) -> None:
    a, b = two_nodes
    call = Call(a, b)
    async with aiohttp.ClientSession() as http:
        host, guest = await call.start(http)
        assert a.stop() == 0
        told = await guest.expect("reconnect")
        assert told["reason"] == "shutdown"
        resume = guest.resume_info()
        try:
            await host.expect("peer-reconnecting", timeout=20)
        except TimeoutError:
            raise AssertionError(a.output()[-3000:]) from None
        await host.send(type="chat", text="still here")
        back = await open_peer(http, _ws(b), _join(b, call.patient, call.session_id), resume)
        assert back.welcome["resumed"] is True
        assert await _chats(back, 1) == ["still here"]


def _call_on_two_nodes(launcher: BrokerLauncher, redis_url: str, tmp_path: Path) -> Call:
    flags = ["--redis-url", redis_url]
    a = launcher.start(tmp_path / "a", [*flags, "--demo"])
    b = launcher.start(tmp_path / "b", flags)
    return Call(a, b)


async def test_call_recovers_after_redis_restarts(
    broker_launcher: BrokerLauncher, durable_redis: Any, tmp_path: Path
) -> None:
    url, restart, _, _ = durable_redis
    call = _call_on_two_nodes(broker_launcher, url, tmp_path)
    async with aiohttp.ClientSession() as http:
        host, guest = await call.start(http)
        await host.send(type="chat", text="one")
        assert await _chats(guest, 1) == ["one"]
        restart()
        assert await _chat_until_delivered(host, guest, "two") == ["two"]
        await guest.send(type="chat", text="three")
        texts = []
        while True:
            msg = await host.expect("chat")
            texts.append(msg["text"])
            if msg["text"] == "three":
                break
        assert texts.count("three") == 1


async def test_a_message_while_redis_is_down_gets_an_error_and_the_socket_stays(
    broker_launcher: BrokerLauncher, durable_redis: Any, tmp_path: Path
) -> None:
    url, _, stop, start = durable_redis
    call = _call_on_two_nodes(broker_launcher, url, tmp_path)
    async with aiohttp.ClientSession() as http:
        host, guest = await call.start(http)
        stop()
        await host.send(type="chat", text="lost", id="c1")
        error = await host.expect("error", 10.0)
        assert (error["code"], error.get("ref")) == ("unavailable", "c1"), error
        start()
        # the same sockets: nothing was closed
        assert await _chat_until_delivered(host, guest, "back") == ["back"]
