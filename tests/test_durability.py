"""The broker as a real process: what it keeps across a restart, how it refuses bad flags,
and that ``--help`` and the README list every setting.

Each test starts ``python -m broker serve`` (and the admin CLI) as a subprocess, on the
embedded SQLite store and on Redis (a real ``redis-server``), and talks HTTP to it.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis

from broker import demo
from broker.config import describe
from tests.support.broker_proc import BrokerLauncher, BrokerProcess

PASSWORD = "durable horse battery"
ADMIN_PASSWORD = "admin horse battery"


@pytest.fixture(params=["sqlite", "redis"])
def backend_args(request: pytest.FixtureRequest) -> list[str]:
    """Extra ``serve``/CLI flags that pick the store: none for SQLite, ``--redis-url``."""
    if request.param == "sqlite":
        return []
    url: str = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()
    return ["--redis-url", url]


def _email(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.org"


def _login(broker: BrokerProcess, email: str, password: str) -> dict[str, Any]:
    reply = broker.call("POST", "/api/v1/auth/login", {"email": email, "password": password})
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.json()
    return body


def _kids(broker: BrokerProcess) -> set[str]:
    reply = broker.call("GET", "/.well-known/jwks.json")
    assert reply.status == 200, reply.body
    return {key["kid"] for key in reply.json()["keys"]}


def _token_kid(token: str) -> str:
    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_state_survives_a_restart(
    broker_launcher: BrokerLauncher, backend_args: list[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = broker_launcher.start(data_dir, backend_args)
    expected_store = "store: redis" if backend_args else "store: sqlite"
    assert expected_store in broker.output()

    # A patient signs up and logs in over HTTP.
    email = _email("durable")
    reply = broker.call(
        "POST",
        "/api/v1/auth/register",
        {"email": email, "password": PASSWORD, "display_name": "Dee Durable", "role": "patient"},
    )
    assert reply.status == 201, reply.body
    user_id = reply.json()["id"]
    session = _login(broker, email, PASSWORD)
    access, refresh = session["access_token"], session["refresh_token"]
    assert broker.call("GET", "/api/v1/me", token=access).json()["id"] == user_id
    kids = _kids(broker)
    assert _token_kid(access) in kids

    # A clinic, its admin and an API key, made with the admin CLI on the same store.
    store_flags = ["--data-dir", str(data_dir), *backend_args]
    clinic = broker_launcher.cli("clinic", "add", "--name", "Durable Clinic", *store_flags)
    clinic_id = _last_line(clinic.stdout)
    admin_email = _email("admin")
    added = broker_launcher.cli(
        "user",
        "add",
        "--email",
        admin_email,
        "--name",
        "Ada Admin",
        "--role",
        "admin",
        "--clinic",
        clinic_id,
        *store_flags,
        env={"BROKER_NEW_PASSWORD": ADMIN_PASSWORD},
    )
    admin_id = _last_line(added.stdout)
    created = broker_launcher.cli(
        "apikey", "create", "--clinic", clinic_id, "--name", "ehr", *store_flags
    )
    key_id, api_key = created.stdout.strip().splitlines()[-2:]
    assert api_key.startswith(f"cck_{key_id}.")
    assert broker.call("GET", f"/api/v1/clinics/{clinic_id}", token=api_key).status == 200
    assert _login(broker, admin_email, ADMIN_PASSWORD)["user"]["id"] == admin_id
    assert _kids(broker) == kids, "the CLI must reuse the data dir's signing key"

    broker = broker_launcher.restart(broker)

    # Same accounts, same signing key, same API key.
    assert _kids(broker) == kids
    me = broker.call("GET", "/api/v1/me", token=access)
    assert me.status == 200, me.body
    assert me.json()["id"] == user_id
    assert _login(broker, email, PASSWORD)["user"]["id"] == user_id
    refreshed = broker.call("POST", "/api/v1/auth/refresh", {"refresh_token": refresh})
    assert refreshed.status == 200, refreshed.body
    reused = broker.call("POST", "/api/v1/auth/refresh", {"refresh_token": refresh})
    assert reused.status == 401, "a used refresh token must stay used across a restart"
    clinic_reply = broker.call("GET", f"/api/v1/clinics/{clinic_id}", token=api_key)
    assert clinic_reply.status == 200, clinic_reply.body
    assert clinic_reply.json()["name"] == "Durable Clinic"
    staff = broker.call("GET", f"/api/v1/clinics/{clinic_id}/staff", token=api_key).json()
    assert [person["id"] for person in staff["items"]] == [admin_id]
    admin = _login(broker, admin_email, ADMIN_PASSWORD)
    keys = broker.call("GET", f"/api/v1/clinics/{clinic_id}/api-keys", token=admin["access_token"])
    assert [key["id"] for key in keys.json()["items"]] == [key_id]

    assert broker.stop() == 0, broker.output()


def test_demo_seed_twice_does_not_duplicate(
    broker_launcher: BrokerLauncher, backend_args: list[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = broker_launcher.start(data_dir, [*backend_args, "--demo"])
    assert "Demo logins" in broker.output()
    first = _login(broker, "admin@demo.citycall.test", demo.PASSWORD)
    clinic_id = first["user"]["clinic_id"]
    assert clinic_id
    sessions = _patient_sessions(broker)

    broker = broker_launcher.restart(broker)
    assert "Demo logins" in broker.output()
    admin = _login(broker, "admin@demo.citycall.test", demo.PASSWORD)
    assert admin["user"]["id"] == first["user"]["id"]
    assert admin["user"]["clinic_id"] == clinic_id
    staff = broker.call("GET", f"/api/v1/clinics/{clinic_id}/staff", token=admin["access_token"])
    assert staff.status == 200, staff.body
    roles = sorted(person["role"] for person in staff.json()["items"])
    assert roles == ["admin", "clinician"]
    for _, email, _ in demo.DEMO_PEOPLE:
        _login(broker, email, demo.PASSWORD)
    assert _patient_sessions(broker) == sessions, "the demo sessions must not be booked twice"


def _patient_sessions(broker: BrokerProcess) -> list[str]:
    patient = _login(broker, "patient@demo.citycall.test", demo.PASSWORD)
    reply = broker.call("GET", "/api/v1/sessions", token=patient["access_token"])
    assert reply.status == 200, reply.body
    return sorted(session["id"] for session in reply.json()["items"])


def _serve(launcher: BrokerLauncher, *flags: str) -> Any:
    return launcher.cli("serve", "--data-dir", str(launcher.workdir / "data"), *flags, check=False)


def test_port_must_be_a_number(broker_launcher: BrokerLauncher) -> None:
    result = _serve(broker_launcher, "--port", "notanumber")
    assert result.returncode == 2, result.stderr
    assert "port" in result.stderr
    assert "notanumber" in result.stderr
    assert "Traceback" not in result.stderr


def test_tls_cert_needs_a_key(broker_launcher: BrokerLauncher, tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    result = _serve(broker_launcher, "--port", "0", "--tls-cert", str(cert))
    assert result.returncode == 2, result.stderr
    assert "tls_key" in result.stderr.replace("-", "_")
    assert "Traceback" not in result.stderr


def test_help_lists_every_setting(broker_launcher: BrokerLauncher) -> None:
    result = broker_launcher.cli("serve", "--help")
    for flag, env, _, _ in describe():
        assert flag in result.stdout
        assert env in result.stdout


def settings_table() -> str:
    """The README's settings table, as generated from ``broker.config.describe()``."""
    lines = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for flag, env, default, text in describe():
        shown = f"`{default}`" if default else ""
        meaning = text.replace("|", "\\|")
        lines.append(f"| `{flag}` | `{env}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


def test_readme_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    expected = settings_table()
    assert expected in readme, (
        "README.md's settings table is out of date with broker.config; replace it with:\n"
        + expected
    )
