"""FHIR and iCalendar over HTTP: what an EHR or a calendar app reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot
from icalendar import Calendar

from broker.domain import Role
from broker.formats.fhir import fhir_id
from tests.support.app import Account, expect_problem, signed_up, staff_account

FHIR = "application/fhir+json"


def at(minutes: float) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now + timedelta(minutes=minutes)


@pytest.fixture
async def booked(client: Any) -> tuple[Account, Account, Account, dict[str, Any]]:
    admin = await staff_account(client)
    doc = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
    patient = await signed_up(client, "patient")
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "checkup",
            "title": "Diabetes check-up",
            "start": at(60).isoformat(),
            "end": at(80).isoformat(),
            "time_zone": "Europe/Berlin",
            "clinician_id": doc.user_id,
            "patient_id": patient.user_id,
        },
        headers=admin.headers,
    )
    assert resp.status == 201, await resp.text()
    return admin, doc, patient, (await resp.json())["items"][0]


async def test_appointment_read_and_search(client: Any, booked: Any) -> None:
    admin, doc, patient, session = booked
    fid = fhir_id(session["id"])
    resp = await client.get(f"/fhir/Appointment/{fid}", headers=patient.headers)
    assert resp.status == 200
    assert resp.content_type == FHIR
    body = await resp.json(content_type=FHIR)
    appointment = Appointment.model_validate(body)
    assert appointment.status == "booked"
    refs = {p.actor.reference for p in appointment.participant}
    assert refs == {f"Practitioner/{fhir_id(doc.user_id)}", f"Patient/{fhir_id(patient.user_id)}"}

    day = at(60).date().isoformat()
    for params in (
        {"patient": f"Patient/{fhir_id(patient.user_id)}"},
        {"practitioner": f"Practitioner/{fhir_id(doc.user_id)}", "date": day},
        {"status": "booked"},
    ):
        resp = await client.get("/fhir/Appointment", params=params, headers=admin.headers)
        assert resp.status == 200, await resp.text()
        bundle = Bundle.model_validate(await resp.json(content_type=FHIR))
        assert bundle.type == "searchset"
        assert [e.resource.id for e in bundle.entry or []] == [fid], params
    resp = await client.get(
        "/fhir/Appointment", params={"status": "cancelled"}, headers=admin.headers
    )
    assert (await resp.json(content_type=FHIR))["total"] == 0
    stranger = await signed_up(client, "patient")
    resp = await client.get(f"/fhir/Appointment/{fid}", headers=stranger.headers)
    await expect_problem(resp, 404, "not_found")
    resp = await client.get(
        "/fhir/Appointment", params={"patient": "Patient/%%%"}, headers=admin.headers
    )
    await expect_problem(resp, 422, "invalid_input")


async def test_schedule_and_free_slots(client: Any, booked: Any) -> None:
    _, doc, patient, _ = booked
    weekly = [{"weekday": d, "start": "00:00", "end": "23:40"} for d in range(7)]
    resp = await client.put(
        f"/api/v1/clinicians/{doc.user_id}/availability",
        json={"time_zone": "Europe/Berlin", "weekly": weekly},
        headers=doc.headers,
    )
    assert resp.status == 200, await resp.text()
    sid = fhir_id(doc.user_id)
    schedule = await client.get(f"/fhir/Schedule/{sid}", headers=patient.headers)
    Schedule.model_validate(await schedule.json(content_type=FHIR))
    resp = await client.get(
        "/fhir/Slot",
        params={"schedule": f"Schedule/{sid}", "start": f"ge{at(0).isoformat()}"},
        headers=patient.headers,
    )
    assert resp.status == 200, await resp.text()
    bundle = Bundle.model_validate(await resp.json(content_type=FHIR))
    slots = [Slot.model_validate(e.resource.model_dump()) for e in bundle.entry or []]
    assert slots and all(s.status == "free" for s in slots)
    starts = {s.start.astimezone(UTC) for s in slots}
    assert at(60) not in starts  # the booked check-up's slot is taken


async def test_session_ics_and_private_feed(client: Any, booked: Any) -> None:
    admin, _, patient, session = booked
    resp = await client.get(
        f"/api/v1/sessions/{session['id']}/calendar.ics", headers=patient.headers
    )
    assert resp.status == 200
    assert resp.content_type == "text/calendar"
    cal = Calendar.from_ical(await resp.read())
    assert str(cal["METHOD"]) == "REQUEST"
    event = next(iter(cal.walk("VEVENT")))
    assert str(event["UID"]).startswith(session["id"])
    assert event.decoded("DTSTART").tzinfo is not None
    assert any(str(tz["TZID"]) == "Europe/Berlin" for tz in cal.walk("VTIMEZONE"))

    await client.post(f"/api/v1/sessions/{session['id']}/cancel", headers=admin.headers)
    resp = await client.get(
        f"/api/v1/sessions/{session['id']}/calendar.ics", headers=patient.headers
    )
    cancelled = Calendar.from_ical(await resp.read())
    assert str(cancelled["METHOD"]) == "CANCEL"
    assert int(next(iter(cancelled.walk("VEVENT")))["SEQUENCE"]) == 1

    made = await client.post("/api/v1/me/calendar-feed", headers=patient.headers)
    url = (await made.json())["url"]
    path = url[url.index("/calendar/") :]
    feed = await client.get(path)
    assert feed.status == 200
    events = Calendar.from_ical(await feed.read()).walk("VEVENT")
    assert [str(e["UID"]).split("@")[0] for e in events] == [session["id"]]
    await client.post("/api/v1/me/calendar-feed", headers=patient.headers)  # replaces it
    gone = await client.get(path)
    await expect_problem(gone, 404, "invalid_feed_token")
