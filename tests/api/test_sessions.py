"""Scheduling through the REST API, on SQLite and on a real redis-server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.scheduling.joining import JOIN_AUDIENCE
from broker.scheduling.sweeper import Sweeper
from tests.support.app import (
    Account,
    app_services,
    expect_problem,
    signed_up,
    staff_account,
)


@pytest.fixture(params=["sqlite", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return Settings(data_dir=tmp_path, redis_url=url)
    return Settings(data_dir=tmp_path)


def at(minutes: float) -> datetime:
    """A time ``minutes`` from now, on a whole minute."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now + timedelta(minutes=minutes)


async def checkup(
    client: Any,
    staff: Account,
    clinician_id: str,
    patient_id: str,
    start: datetime,
    minutes: int = 20,
    **extra: Any,
) -> Any:
    return await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "Blood pressure review",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=minutes)).isoformat(),
            "time_zone": "Europe/Berlin",
            "clinician_id": clinician_id,
            "patient_id": patient_id,
            **extra,
        },
        headers=staff.headers,
    )


@pytest.fixture
async def clinic(client: Any) -> tuple[Account, Account, Account]:
    """(admin, clinician, patient) of one fresh clinic."""
    from broker.domain import Role

    admin = await staff_account(client)
    clinician = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
    patient = await signed_up(client, "patient")
    return admin, clinician, patient


async def test_clinic_books_hd_checkup_patient_sees_it(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(60))
    assert resp.status == 201, await resp.text()
    session = (await resp.json())["items"][0]
    assert session["status"] == "booked"
    assert session["max_participants"] == 3
    assert session["quality"]["name"] == "hd"
    assert (session["quality"]["width"], session["quality"]["height"]) == (1280, 720)
    opens = datetime.fromisoformat(session["join_opens_at"])
    assert opens == datetime.fromisoformat(session["start"]) - timedelta(minutes=10)
    roles = {p["user_id"]: p["role"] for p in session["participants"]}
    assert roles == {clinician.user_id: "host", patient.user_id: "patient"}

    mine = await client.get("/api/v1/sessions", headers=patient.headers)
    assert [s["id"] for s in (await mine.json())["items"]] == [session["id"]]
    one = await client.get(f"/api/v1/sessions/{session['id']}", headers=patient.headers)
    assert one.status == 200
    assert (await one.json())["notes"] is None

    stranger = await signed_up(client, "patient")
    other = await client.get(f"/api/v1/sessions/{session['id']}", headers=stranger.headers)
    await expect_problem(other, 404, "not_found")
    other_clinic = await staff_account(client)
    resp = await client.get(f"/api/v1/sessions/{session['id']}", headers=other_clinic.headers)
    await expect_problem(resp, 404, "not_found")


async def test_patients_cannot_book_checkups_directly(client: Any, clinic: Any) -> None:
    _, clinician, patient = clinic
    resp = await checkup(client, patient, clinician.user_id, patient.user_id, at(60))
    await expect_problem(resp, 403, "forbidden")


async def test_nobody_is_double_booked(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    first = await checkup(client, admin, clinician.user_id, patient.user_id, at(60))
    assert first.status == 201
    other_patient = await signed_up(client, "patient")
    clash = await checkup(client, admin, clinician.user_id, other_patient.user_id, at(70))
    body = await expect_problem(clash, 409, "double_booked")
    assert clinician.user_id in body["user_ids"]
    back_to_back = await checkup(client, admin, clinician.user_id, other_patient.user_id, at(80))
    assert back_to_back.status == 201


async def test_join_window_and_join_token(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    later = await checkup(client, admin, clinician.user_id, patient.user_id, at(120))
    later_id = (await later.json())["items"][0]["id"]
    early = await client.post(f"/api/v1/sessions/{later_id}/join", headers=patient.headers)
    body = await expect_problem(early, 409, "outside_join_window")
    assert datetime.fromisoformat(body["opens_at"]) == at(110)

    soon = await checkup(client, admin, clinician.user_id, patient.user_id, at(5))
    soon_id = (await soon.json())["items"][0]["id"]
    resp = await client.post(f"/api/v1/sessions/{soon_id}/join", headers=patient.headers)
    assert resp.status == 200, await resp.text()
    grant = await resp.json()
    assert grant["role"] == "patient"
    assert grant["signaling_url"].endswith("/ws")
    assert grant["quality"]["name"] == "hd"
    claims = await app_services(client).tokens.verify(grant["join_token"], JOIN_AUDIENCE, "join")
    assert claims["sid"] == soon_id
    assert claims["sub"] == patient.user_id
    assert claims["exp"] == pytest.approx(
        datetime.fromisoformat(grant["join_closes_at"]).timestamp(), abs=2
    )


async def test_reschedule_bumps_sequence_and_cancel_frees_the_slot(
    client: Any, clinic: Any
) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(60))
    session = (await resp.json())["items"][0]
    moved = await client.patch(
        f"/api/v1/sessions/{session['id']}",
        json={"start": at(90).isoformat(), "end": at(110).isoformat()},
        headers=admin.headers,
    )
    assert moved.status == 200, await moved.text()
    assert (await moved.json())["sequence"] == 1
    cancelled = await client.post(
        f"/api/v1/sessions/{session['id']}/cancel",
        json={"reason": "patient_request"},
        headers=patient.headers,
    )
    assert cancelled.status == 200
    body = await cancelled.json()
    assert body["status"] == "cancelled"
    assert body["sequence"] == 2
    again = await checkup(client, admin, clinician.user_id, patient.user_id, at(90))
    assert again.status == 201
    join = await client.post(f"/api/v1/sessions/{session['id']}/join", headers=patient.headers)
    await expect_problem(join, 409, "session_cancelled")


async def test_capacity_refuses_with_suggestions_or_downgrades(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    from broker.domain import Role

    resp = await client.put(
        f"/api/v1/clinics/{admin.clinic_id}/capacity",
        json={"capacity_mbps": 10},
        headers=admin.headers,
    )
    assert resp.status == 200, await resp.text()
    first = await checkup(client, admin, clinician.user_id, patient.user_id, at(60))
    assert first.status == 201  # hd: 3 x 2.5 Mbit/s = 7.5 of 10
    second_doc = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
    second_patient = await signed_up(client, "patient")
    full = await checkup(client, admin, second_doc.user_id, second_patient.user_id, at(60))
    body = await expect_problem(full, 409, "capacity_exceeded")
    suggested = [datetime.fromisoformat(x) for x in body["suggested_starts"].split(",")]
    assert suggested[0] == at(80)  # right after the first check-up ends
    lower = await checkup(
        client, admin, second_doc.user_id, second_patient.user_id, at(60), allow_downgrade=True
    )
    assert lower.status == 201, await lower.text()
    assert (await lower.json())["items"][0]["quality"]["name"] == "sd"


async def test_availability_slots_and_patient_booking(client: Any, clinic: Any) -> None:
    _admin, clinician, patient = clinic
    weekly = [{"weekday": d, "start": "00:00", "end": "23:40"} for d in range(7)]
    resp = await client.put(
        f"/api/v1/clinicians/{clinician.user_id}/availability",
        json={"time_zone": "UTC", "slot_minutes": 20, "weekly": weekly},
        headers=clinician.headers,
    )
    assert resp.status == 200, await resp.text()
    frm, to = at(60), at(60 * 24)
    resp = await client.get(
        f"/api/v1/clinicians/{clinician.user_id}/slots",
        params={"from": frm.isoformat(), "to": to.isoformat()},
        headers=patient.headers,
    )
    slots = (await resp.json())["items"]
    assert slots and all(datetime.fromisoformat(s["start"]) >= frm for s in slots)
    pick = slots[0]["start"]
    booked = await client.post(
        "/api/v1/slots/book",
        json={"clinician_id": clinician.user_id, "start": pick},
        headers=patient.headers,
    )
    assert booked.status == 201, await booked.text()
    resp = await client.get(
        f"/api/v1/clinicians/{clinician.user_id}/slots",
        params={"from": frm.isoformat(), "to": to.isoformat()},
        headers=patient.headers,
    )
    assert pick not in [s["start"] for s in (await resp.json())["items"]]
    rival = await signed_up(client, "patient")
    taken = await client.post(
        "/api/v1/slots/book",
        json={"clinician_id": clinician.user_id, "start": pick},
        headers=rival.headers,
    )
    await expect_problem(taken, 409, "double_booked")
    off_grid = await client.post(
        "/api/v1/slots/book",
        json={
            "clinician_id": clinician.user_id,
            "start": (datetime.fromisoformat(pick) + timedelta(minutes=7)).isoformat(),
        },
        headers=rival.headers,
    )
    await expect_problem(off_grid, 422, "invalid_input")


async def test_recurring_family_call_with_one_occurrence_moved_and_one_cancelled(
    client: Any,
) -> None:
    grandma = await signed_up(client, "family")
    grandson = await signed_up(client, "family")
    start = at(60 * 24)
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "family_call",
            "title": "Sunday call",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "time_zone": "Europe/Berlin",
            "participant_ids": [grandma.user_id],
            "recurrence": "FREQ=WEEKLY;COUNT=4",
        },
        headers=grandson.headers,
    )
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert len(items) == 4
    assert len({i["series_id"] for i in items}) == 1
    assert items[0]["max_participants"] == 4
    starts = [datetime.fromisoformat(i["start"]) for i in items]
    assert all(
        b - a in (timedelta(days=7), timedelta(days=7, hours=1), timedelta(days=6, hours=23))
        for a, b in itertools.pairwise(starts)
    )
    cancel = await client.post(f"/api/v1/sessions/{items[1]['id']}/cancel", headers=grandma.headers)
    assert cancel.status == 200
    moved_start = datetime.fromisoformat(items[2]["start"]) + timedelta(hours=2)
    moved = await client.patch(
        f"/api/v1/sessions/{items[2]['id']}",
        json={
            "start": moved_start.isoformat(),
            "end": (moved_start + timedelta(minutes=30)).isoformat(),
        },
        headers=grandson.headers,
    )
    assert moved.status == 200, await moved.text()
    listed = await client.get("/api/v1/sessions", headers=grandma.headers)
    statuses = [(i["id"], i["status"]) for i in (await listed.json())["items"]]
    assert statuses == [
        (items[0]["id"], "booked"),
        (items[1]["id"], "cancelled"),
        (items[2]["id"], "booked"),
        (items[3]["id"], "booked"),
    ]


async def test_guest_invites_are_limited_and_revocable(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(5))
    session_id = (await resp.json())["items"][0]["id"]
    made = await client.post(
        f"/api/v1/sessions/{session_id}/invites",
        json={"role": "interpreter", "display_name": "Interpreter (Arabic)"},
        headers=clinician.headers,
    )
    assert made.status == 201, await made.text()
    invite = await made.json()
    assert len(invite["token"]) >= 40
    denied = await client.post(
        f"/api/v1/sessions/{session_id}/invites",
        json={"role": "guest", "display_name": "Someone"},
        headers=patient.headers,
    )
    await expect_problem(denied, 403, "forbidden")
    full = await client.post(
        f"/api/v1/sessions/{session_id}/invites",
        json={"role": "guest", "display_name": "Fourth"},
        headers=clinician.headers,
    )
    await expect_problem(full, 409, "session_full")

    redeemed = await client.post("/api/v1/invites/redeem", json={"token": invite["token"]})
    assert redeemed.status == 200, await redeemed.text()
    grant = await redeemed.json()
    assert grant["role"] == "interpreter"
    claims = await app_services(client).tokens.verify(grant["join_token"], JOIN_AUDIENCE, "join")
    assert claims["name"] == "Interpreter (Arabic)"
    again = await client.post("/api/v1/invites/redeem", json={"token": invite["token"]})
    await expect_problem(again, 404, "invalid_invite")
    forged = await client.post("/api/v1/invites/redeem", json={"token": "x" * 43})
    await expect_problem(forged, 404, "invalid_invite")

    listed = await client.get(f"/api/v1/sessions/{session_id}/invites", headers=clinician.headers)
    assert [i["uses"] for i in (await listed.json())["items"]] == [1]


async def test_revoked_invite_stops_working(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(5))
    session_id = (await resp.json())["items"][0]["id"]
    made = await client.post(
        f"/api/v1/sessions/{session_id}/invites",
        json={"role": "family", "display_name": "Daughter", "max_uses": 2},
        headers=admin.headers,
    )
    invite = await made.json()
    gone = await client.delete(
        f"/api/v1/sessions/{session_id}/invites/{invite['invite']['id']}", headers=admin.headers
    )
    assert gone.status == 204
    resp = await client.post("/api/v1/invites/redeem", json={"token": invite["token"]})
    await expect_problem(resp, 404, "invalid_invite")


async def test_checkup_nobody_joined_becomes_noshow(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(30))
    session = (await resp.json())["items"][0]
    svc = app_services(client)
    end = datetime.fromisoformat(session["end"])
    sweeper = Sweeper(
        svc.store,
        svc.events,
        timedelta(minutes=10),
        timedelta(minutes=30),
        timedelta(minutes=15),
        clock=lambda: end + timedelta(minutes=31),
    )
    assert await sweeper.sweep() >= 1
    after = await client.get(f"/api/v1/sessions/{session['id']}", headers=admin.headers)
    assert (await after.json())["status"] == "noshow"


async def test_clinic_api_key_books_and_lists(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    made = await client.post(
        f"/api/v1/clinics/{admin.clinic_id}/api-keys", json={"name": "EHR"}, headers=admin.headers
    )
    key = (await made.json())["secret"]
    ehr = {"Authorization": f"Bearer {key}"}
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "Follow-up",
            "start": at(60).isoformat(),
            "end": at(80).isoformat(),
            "clinician_id": clinician.user_id,
            "patient_id": patient.user_id,
            "notes": "bring readings",
        },
        headers=ehr,
    )
    assert resp.status == 201, await resp.text()
    listed = await client.get(
        "/api/v1/sessions", params={"clinic_id": admin.clinic_id}, headers=ehr
    )
    items = (await listed.json())["items"]
    assert [i["notes"] for i in items] == ["bring readings"]


async def test_audit_trail_keeps_ids_and_is_for_staff(client: Any, clinic: Any) -> None:
    admin, clinician, patient = clinic
    resp = await checkup(client, admin, clinician.user_id, patient.user_id, at(5))
    session_id = (await resp.json())["items"][0]["id"]
    assert (
        await client.post(f"/api/v1/sessions/{session_id}/join", headers=patient.headers)
    ).status == 200
    await client.post(
        f"/api/v1/sessions/{session_id}/cancel",
        json={"reason": "clinic_closed"},
        headers=admin.headers,
    )
    trail = await client.get(f"/api/v1/sessions/{session_id}/audit", headers=clinician.headers)
    assert trail.status == 200
    items = (await trail.json())["items"]
    assert [(i["action"], i["actor_id"]) for i in items] == [
        ("join_token_issued", patient.user_id),
        ("cancelled", admin.user_id),
    ]
    assert items[1]["reason"] == "clinic_closed"
    assert "@" not in await trail.text()
    denied = await client.get(f"/api/v1/sessions/{session_id}/audit", headers=patient.headers)
    await expect_problem(denied, 403, "forbidden")
