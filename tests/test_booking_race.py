"""Two broker processes on one redis-server: bookings racing for one slot give one winner."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from tests.support.broker_proc import BrokerLauncher, BrokerProcess

PASSWORD = "race-password-123"


def _login(broker: BrokerProcess, email: str) -> str:
    reply = broker.call("POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


def test_two_nodes_racing_for_one_slot_book_it_once(
    broker_launcher: BrokerLauncher, redis_server: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    flags = ["--redis-url", redis_server]
    store = ["--data-dir", str(tmp_path / "cli"), *flags]
    clinic_id = broker_launcher.cli("clinic", "add", "--name", "Race Clinic", *store)
    clinic_id_text = clinic_id.stdout.strip().splitlines()[-1]
    admin_email = f"admin-{secrets.token_hex(3)}@example.org"
    doc_email = f"doc-{secrets.token_hex(3)}@example.org"
    for email, role in ((admin_email, "admin"), (doc_email, "clinician")):
        broker_launcher.cli(
            "user",
            "add",
            "--email",
            email,
            "--name",
            role.title(),
            "--role",
            role,
            "--clinic",
            clinic_id_text,
            *store,
            env={"BROKER_NEW_PASSWORD": PASSWORD},
        )
    node_a = broker_launcher.start(tmp_path / "a", flags)
    node_b = broker_launcher.start(tmp_path / "b", flags)

    doc_id = node_a.call("GET", "/api/v1/me", token=_login(node_a, doc_email)).json()["id"]
    patients = []
    for i in range(8):
        email = f"p{i}-{secrets.token_hex(3)}@example.org"
        made = node_b.call(
            "POST",
            "/api/v1/auth/register",
            {"email": email, "password": PASSWORD, "display_name": f"P{i}", "role": "patient"},
        )
        assert made.status == 201, made.body
        patients.append(made.json()["id"])
    # A token from node A works on node B: both publish their keys to the shared store.
    token = _login(node_a, admin_email)

    start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=20)

    def book(args: tuple[BrokerProcess, str]) -> int:
        node, patient = args
        return node.call(
            "POST",
            "/api/v1/sessions",
            {
                "kind": "checkup",
                "title": "Race",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "clinician_id": doc_id,
                "patient_id": patient,
            },
            token=token,
        ).status

    jobs = [((node_a, node_b)[i % 2], p) for i, p in enumerate(patients)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        statuses = list(pool.map(book, jobs))
    assert sorted(statuses) == [201] + [409] * (len(jobs) - 1), statuses

    for node in (node_a, node_b):
        listed = node.call("GET", f"/api/v1/sessions?user_id={doc_id}", token=token)
        assert listed.status == 200, listed.body
        assert len(listed.json()["items"]) == 1
