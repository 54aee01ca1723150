"""Fixtures that run the broker as a real process: ``python -m broker serve`` on a free port.

``broker_launcher`` starts brokers (``start``), restarts them on the same data directory
(``restart``), runs the admin CLI (``cli``) and stops whatever is still running when the test
ends (SIGTERM, then SIGKILL). ``BrokerProcess.call`` is a tiny JSON client on the standard
library, so these tests need nothing beyond the broker's own dependencies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port

__all__ = ["BrokerLauncher", "BrokerProcess", "BrokerStartError", "Reply", "broker_launcher"]

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0


class BrokerStartError(RuntimeError):
    """The broker process exited, or never answered ``/healthz``."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status, headers and the body (parsed when it is JSON)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    def json(self) -> Any:
        if not isinstance(self.body, dict | list):
            raise AssertionError(f"not a JSON answer ({self.status}): {self.body!r}")
        return self.body


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The test's environment without ``BROKER_*`` settings, so only explicit flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(slots=True)
class BrokerProcess:
    """One running ``python -m broker serve``; its output goes to ``log_path``."""

    port: int
    data_dir: Path
    extra_args: tuple[str, ...]
    log_path: Path
    proc: subprocess.Popen[bytes]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        form: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """Send one request; ``body`` goes as JSON, ``form`` as a urlencoded form."""
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if form is not None:
            from urllib.parse import urlencode

            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _reply(error.code, error.headers, error.read())


def _reply(status: int, headers: Any, raw: bytes) -> Reply:
    content_type = headers.get("Content-Type", "")
    body: Any = raw.decode(errors="replace")
    if raw and "json" in content_type:
        body = json.loads(raw)
    return Reply(status, dict(headers.items()), body)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class BrokerLauncher:
    """Starts, restarts and stops broker processes for one test; runs the CLI."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: list[BrokerProcess] = []
        self._count = 0

    def start(
        self,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> BrokerProcess:
        """Start ``python -m broker serve`` and wait until ``/healthz`` answers 200.

        ``data_dir`` defaults to a fresh directory; ``extra_args`` are more flags, such as
        ``("--redis-url", url)`` or ``("--demo",)``. A port taken meanwhile is retried.
        """
        if data_dir is None:
            data_dir = self.workdir / f"data-{self._count}"
        last: BrokerStartError | None = None
        for _ in range(3):
            try:
                return self._start_once(data_dir, tuple(extra_args), env or {}, port)
            except BrokerStartError as error:
                last = error
                if port is not None or "address already in use" not in str(error).lower():
                    raise
        assert last is not None
        raise last

    def restart(self, broker: BrokerProcess) -> BrokerProcess:
        """Stop ``broker`` (gracefully) and start a new one with the same data and flags."""
        code = broker.stop()
        if code != 0:
            raise AssertionError(f"broker exited with {code} on SIGTERM:\n{broker.output()}")
        return self.start(broker.data_dir, broker.extra_args, env=broker.env)

    def _start_once(
        self,
        data_dir: Path,
        extra_args: tuple[str, ...],
        env: Mapping[str, str],
        port: int | None,
    ) -> BrokerProcess:
        self._count += 1
        chosen = port if port is not None else free_port()
        args = [sys.executable, "-m", "broker", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(chosen), "--data-dir", str(data_dir), *extra_args]
        log_path = self.workdir / f"broker-{self._count}-{chosen}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_env(env),
            )
        broker = BrokerProcess(chosen, data_dir, extra_args, log_path, proc, dict(env))
        self._running.append(broker)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerStartError(
                    f"broker exited with {proc.returncode} before answering:\n{broker.output()}"
                )
            if _healthy(broker.url):
                return broker
            time.sleep(0.05)
        broker.stop()
        raise BrokerStartError(f"broker did not answer /healthz in time:\n{broker.output()}")

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m broker ARGS`` with no standard input; ``check`` wants exit 0."""
        result = subprocess.run(
            [sys.executable, "-m", "broker", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=_env(env),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"python -m broker {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def stop_all(self) -> None:
        while self._running:
            self._running.pop().stop()


@pytest.fixture
def broker_launcher(tmp_path: Path) -> Iterator[BrokerLauncher]:
    """Start real broker processes in a test; all are stopped when it ends."""
    launcher = BrokerLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
