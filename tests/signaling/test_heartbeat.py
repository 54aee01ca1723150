"""Dead sockets are found: the sweep's rules with a fake clock, then over a real socket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.config import Settings
from signaling import protocol
from signaling.heartbeat import Heartbeat
from tests.support.app import signed_up
from tests.support.wsclient import open_peer


@dataclass
class FakeSocket:
    frames: int = 0
    closing: bool = False
    pings: int = 0
    closed_with: list[int] = field(default_factory=list)

    def ping(self) -> None:
        self.pings += 1

    def close_soon(self, code: int, reason: str) -> None:
        self.closing = True
        self.closed_with.append(code)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def watched(interval: float = 20.0) -> tuple[Heartbeat, FakeSocket, Clock]:
    clock = Clock()
    beat = Heartbeat(interval, clock)
    sock = FakeSocket()
    beat.watch(sock, sock)
    return beat, sock, clock


async def test_a_silent_socket_is_pinged_then_closed_with_4013() -> None:
    beat, sock, clock = await watched()
    clock.now += 19
    beat.sweep()
    assert (sock.pings, sock.closed_with) == (0, [])
    clock.now += 1
    beat.sweep()
    assert (sock.pings, sock.closed_with) == (1, [])
    clock.now += 9
    beat.sweep()
    assert sock.closed_with == []
    clock.now += 1
    beat.sweep()
    assert sock.closed_with == [protocol.CLOSE_HEARTBEAT]
    await beat.stop()


async def test_any_frame_counts_as_an_answer() -> None:
    beat, sock, clock = await watched()
    for _ in range(5):  # talks now and then: never pinged
        clock.now += 15
        sock.frames += 1
        beat.sweep()
    assert sock.pings == 0
    clock.now += 20
    beat.sweep()
    assert sock.pings == 1
    sock.frames += 1  # the pong
    clock.now += 10
    beat.sweep()
    clock.now += 10
    beat.sweep()
    assert sock.closed_with == []
    await beat.stop()


async def test_forgotten_and_closing_sockets_are_left_alone() -> None:
    beat, sock, clock = await watched()
    other = FakeSocket(closing=True)
    beat.watch(other, other)
    beat.forget(sock)
    clock.now += 100
    beat.sweep()
    beat.sweep()
    assert (sock.pings, other.pings, other.closed_with) == (0, 0, [])
    await beat.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, heartbeat=2)


async def test_a_client_that_never_answers_pings_is_closed(client: Any) -> None:
    """A TV that went away without closing: pinged after 2 s of silence, closed 1-1.5 s later;
    a client that answers pings stays."""
    family = await signed_up(client, "family")
    alive = await open_peer(client, "/ws", family.access_token)
    dead = await client.ws_connect("/ws", autoping=False)
    await dead.send_str(json.dumps({"type": "hello", "token": family.access_token}))
    welcome = json.loads((await dead.receive(timeout=5)).data)
    assert welcome["type"] == "welcome"
    kinds = []
    while True:
        msg = await dead.receive(timeout=10)
        kinds.append(msg.type)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert aiohttp.WSMsgType.PING in kinds
    assert dead.close_code == protocol.CLOSE_HEARTBEAT
    await asyncio.sleep(0.5)
    assert not alive.ws.closed
    await alive.send(type="ping", id="still")
    assert (await alive.expect("pong"))["ref"] == "still"
