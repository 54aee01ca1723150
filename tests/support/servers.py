"""Fixtures that start real servers (redis-server, the broker) on free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aredis

__all__ = ["free_port", "redis_server", "redis_url"]

REDIS_START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _missing(what: str) -> NoReturn:
    """Fail in CI (where every real part must run), skip on a developer's machine."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed", pytrace=False)
    pytest.skip(f"{what} is not installed")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_redis(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start one redis-server in the foreground; retry on a port taken in the meantime."""
    last_error = "no attempt"
    for _ in range(3):
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
        log_path = workdir / f"redis-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        return proc, f"redis://127.0.0.1:{port}/0"
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        _stop(proc)
        last_error = log_path.read_text(errors="replace")[-500:] or "no answer to PING"
    raise RuntimeError(f"redis-server did not start: {last_error}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server for the whole test session; yields its ``redis://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server")
    proc, url = _start_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        _stop(proc)


@pytest_asyncio.fixture
async def redis_url(redis_server: str) -> AsyncIterator[str]:
    """The session's redis-server, emptied before the test."""
    client = aredis.Redis.from_url(redis_server)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    yield redis_server


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[tuple[str, Any, Any, Any]]:
    """A redis-server of the test's own with an append-only file, so a restart keeps its keys:
    (url, restart, stop, start)."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(workdir),
    ]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    def restart() -> None:
        stop()
        start()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", restart, stop, start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
