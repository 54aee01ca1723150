"""Schemathesis against a live broker process: no generated request gets a 5xx answer.

Two passes over every operation in ``/openapi.json``: one anonymous, one as the demo clinic
admin (``Authorization: Bearer <access token>``), which also runs schemathesis' stateful
phase (it follows links between operations, e.g. create a session, then read it). Only the
``not_a_server_error`` check is asked for; how strictly the schema matches the validation is
another question. The seed is fixed so CI is repeatable; set ``CITYCALL_FUZZ_SEED`` to explore.

Hand-made bodies that fuzzing found to break the broker are kept below as regressions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker import demo
from tests.support.broker_proc import BrokerLauncher, BrokerProcess

MAX_EXAMPLES = 25  # per operation and phase
ANONYMOUS_MAX_EXAMPLES = 10
RUN_TIMEOUT = 150.0  # seconds for one schemathesis run; a hang fails instead of stalling CI
SEED = os.environ.get("CITYCALL_FUZZ_SEED", "20261126")
_ST = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


def _operation_count(broker: BrokerProcess) -> int:
    document = broker.call("GET", "/openapi.json").json()
    return sum(
        1
        for item in document["paths"].values()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )


def _schemathesis(
    broker: BrokerProcess, workdir: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", _ST, "run", broker.url + "/openapi.json"]
    args += ["--checks", "not_a_server_error", "--seed", SEED, "--no-color"]
    args += ["--continue-on-failure", "--request-timeout", "10", *options]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    try:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=workdir,
            env=env,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran longer than {RUN_TIMEOUT} s:\n{_text(exc.stdout)[-4000:]}")


def _text(data: Any) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")


def _server_errors(broker: BrokerProcess) -> str:
    """The tracebacks the broker logged for its 500s (the first few), to show with a failure."""
    output = broker.output()
    chunks = output.split("unhandled error")[1:4]
    return "\n---\n".join(chunk[:3000] for chunk in chunks) or "(no traceback logged)"


def _check(broker: BrokerProcess, result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"schemathesis found server errors (exit {result.returncode}):\n{out[-6000:]}\n"
        f"broker log:\n{_server_errors(broker)}"
    )
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested is not None, out[-3000:]
    assert int(tested.group(1)) == _operation_count(broker), out[-3000:]


@pytest.fixture
def demo_broker(broker_launcher: BrokerLauncher) -> BrokerProcess:
    return broker_launcher.start(extra_args=["--demo"])


def test_no_server_errors_anonymous(demo_broker: BrokerProcess, tmp_path: Path) -> None:
    result = _schemathesis(
        demo_broker,
        tmp_path,
        "--max-examples",
        str(ANONYMOUS_MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
    )
    _check(demo_broker, result)


def test_no_server_errors_as_clinic_admin(demo_broker: BrokerProcess, tmp_path: Path) -> None:
    login = demo_broker.call(
        "POST",
        "/api/v1/auth/login",
        {"email": "admin@demo.citycall.test", "password": demo.PASSWORD},
    )
    assert login.status == 200, login.body
    token = login.json()["access_token"]
    result = _schemathesis(
        demo_broker,
        tmp_path,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--header",
        f"Authorization: Bearer {token}",
    )
    _check(demo_broker, result)
    assert token not in result.stdout, "schemathesis should not print the token"


# Regressions: bodies that made the broker answer 500 before.
HOSTILE_FORMS = [
    pytest.param(
        "/api/v1/auth/login",
        "application/x-www-form-urlencoded",
        b"email=%ff%fe&password=\xff\xfe",
        id="login-form-not-utf8",
    ),
    pytest.param(
        "/api/v1/device/token",
        "application/x-www-form-urlencoded",
        b"grant_type=\xff&device_code=%zz",
        id="device-token-form-not-utf8",
    ),
    pytest.param(
        "/api/v1/device/code",
        "application/x-www-form-urlencoded; charset=bogus",
        b"client_id=tv",
        id="device-code-unknown-charset",
    ),
]


@pytest.mark.parametrize(("path", "content_type", "body"), HOSTILE_FORMS)
def test_malformed_form_bodies_are_422(
    broker_launcher: BrokerLauncher, path: str, content_type: str, body: bytes
) -> None:
    import urllib.error
    import urllib.request

    broker = broker_launcher.start()
    request = urllib.request.Request(
        broker.url + path, body, {"Content-Type": content_type}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    with caught.value as error:
        assert error.code == 422
        assert error.headers["Content-Type"].startswith("application/problem+json")
    assert "unhandled error" not in broker.output()


def test_time_zone_that_names_a_directory_is_422(broker_launcher: BrokerLauncher) -> None:
    broker = broker_launcher.start()
    reply = broker.call(
        "POST",
        "/api/v1/auth/register",
        {
            "email": "tz-directory@example.org",
            "password": "long enough password",
            "display_name": "Tess Zone",
            "role": "patient",
            "time_zone": "Europe",
        },
    )
    assert reply.status == 422, reply.body
