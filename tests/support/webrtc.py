"""Real WebRTC in tests: ICE on loopback, an HD test camera, and a real coturn.

``loopback_ice`` makes aioice gather only 127.0.0.1 (it never offers loopback by itself);
``aioice.ice.get_host_addresses`` is a private API, so this is the only place that touches it.
``coturn`` starts ``turnserver`` on free ports with a TURN REST shared secret.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import aioice.ice
import pytest
from aiortc import MediaStreamTrack, VideoStreamTrack
from av import VideoFrame

__all__ = [
    "PatternTrack",
    "TurnServer",
    "coturn",
    "frames_of",
    "loopback_ice",
]

TURN_START_TIMEOUT = 10.0


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host candidates on 127.0.0.1 only (the test process's aiortc peers)."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


class PatternTrack(VideoStreamTrack):
    """A camera of ``width`` x ``height`` at 30 fps: a few grey-level frames in turn."""

    def __init__(self, width: int = 1280, height: int = 720, patterns: int = 8) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.sent = 0
        luma = width * height
        self._y = [bytes([32 + 24 * i]) * luma for i in range(patterns)]
        self._uv = bytes([128]) * (luma // 4)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(self.width, self.height, "yuv420p")
        y, u, v = frame.planes
        y.update(self._y[self.sent % len(self._y)])
        u.update(self._uv)
        v.update(self._uv)
        frame.pts, frame.time_base = pts, Fraction(time_base)
        self.sent += 1
        return frame


async def frames_of(track: MediaStreamTrack, count: int, timeout: float = 20.0) -> list[VideoFrame]:
    """The next ``count`` decoded frames of a received track (bounded in time)."""

    async def take() -> list[VideoFrame]:
        out = []
        for _ in range(count):
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            out.append(frame)
        return out

    return await asyncio.wait_for(take(), timeout)


@dataclass(frozen=True, slots=True)
class TurnServer:
    port: int
    secret: str
    realm: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed", pytrace=False)
    pytest.skip(f"{what} is not installed")


def _free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def _stun_answers(port: int) -> bool:
    """A STUN Binding request to the port gets a Binding success response."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == transaction


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[TurnServer]:
    """A real coturn on free loopback ports with a TURN REST (shared secret) configuration."""
    binary = shutil.which("turnserver")
    if binary is None:
        _missing("turnserver (Debian package coturn)")
    port = _free_udp_port()
    relay = 49152 + secrets.randbelow(150) * 100
    server = TurnServer(port, secrets.token_hex(16), "citycall.test", tmp_path / "turn.log")
    args = [binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"]
    args += [f"--listening-port={port}", f"--min-port={relay}", f"--max-port={relay + 99}"]
    args += ["--use-auth-secret", f"--static-auth-secret={server.secret}"]
    args += [f"--realm={server.realm}", "--no-tls", "--no-dtls", "--no-cli"]
    args += ["--allow-loopback-peers", "--simple-log", f"--log-file={server.log_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TURN_START_TIMEOUT
        while not _stun_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start (exit {proc.poll()})")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
