"""FHIR R4 views: every resource validates against the fhir.resources R4B models, and every
code is checked against the R4 value set it is bound to."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot

from broker.domain import Role, User
from broker.formats import fhir
from broker.scheduling.model import (
    Availability,
    Participant,
    ParticipantRole,
    Quality,
    Session,
    SessionKind,
    SessionStatus,
    WeeklyHours,
)

# R4 (4.0.1) value sets, from the specification.
APPOINTMENT_STATUS = {
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
}
SLOT_STATUS = {"busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error"}
PARTICIPATION_STATUS = {"accepted", "declined", "tentative", "needs-action"}
PARTICIPANT_REQUIRED = {"required", "optional", "information-only"}
# http://hl7.org/fhir/ValueSet/encounter-participant-type (R4): v3 ParticipationType codes
# below _ParticipationAncillary, plus SPRF, PPRF, PART, plus the participant-type code system.
PARTICIPANT_TYPE = {
    ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code)
    for code in ("ADM", "ATND", "CALLBCK", "CON", "DIS", "ESC", "REF", "SPRF", "PPRF", "PART")
} | {
    ("http://terminology.hl7.org/CodeSystem/participant-type", code)
    for code in ("translator", "emergency")
}
# http://terminology.hl7.org/CodeSystem/v2-0276
APPOINTMENT_TYPE = {"CHECKUP", "EMERGENCY", "FOLLOWUP", "ROUTINE", "WALKIN"}
APPOINTMENT_ACTORS = {
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Device",
    "HealthcareService",
    "Location",
}

BASE = "https://broker.example"
VIDEO = "https://broker.example/?session=ses_Ab-c_9"
T0 = datetime(2026, 10, 22, 7, 0, tzinfo=UTC)


def user(uid: str, name: str, role: Role) -> User:
    return User(
        id=uid,
        email=f"{uid}@mail.example",
        display_name=name,
        role=role,
        password_hash="x",
        created_at=T0 - timedelta(days=30),
        updated_at=T0 - timedelta(days=30),
        clinic_id="cln_1" if role.is_staff else None,
    )


PEOPLE = {
    u.id: u
    for u in (
        user("usr_doc_A", "Dr Ada Lovelace", Role.CLINICIAN),
        user("usr_doc-B", "Dr Grace Hopper", Role.CLINICIAN),
        user("usr_pat", "Pat Patient", Role.PATIENT),
        user("usr_fam", "Fay Family", Role.FAMILY),
        user("usr_int", "Ian Interpreter", Role.FAMILY),
    )
}


def checkup(status: SessionStatus = SessionStatus.BOOKED) -> Session:
    return Session(
        id="ses_Ab-c_9",
        kind=SessionKind.CHECKUP,
        title="Blood pressure review",
        start=T0,
        end=T0 + timedelta(minutes=20),
        time_zone="Europe/Berlin",
        status=status,
        quality=Quality.HD,
        max_participants=6,
        participants=(
            Participant("usr_doc_A", ParticipantRole.HOST),
            Participant("usr_doc-B", ParticipantRole.HOST),
            Participant("usr_pat", ParticipantRole.PATIENT),
            Participant("usr_fam", ParticipantRole.FAMILY),
            Participant("usr_int", ParticipantRole.INTERPRETER),
            Participant("inv_guest", ParticipantRole.GUEST, display_name="Gus Guest"),
        ),
        created_by="usr_doc_A",
        created_at=T0 - timedelta(days=2),
        updated_at=T0 - timedelta(days=1, microseconds=-1500),
        site_id="cln_1",
        clinic_id="cln_1",
        sequence=2,
        notes="private clinical note",
    )


def family_call() -> Session:
    return replace(
        checkup(),
        id="ses_fam",
        kind=SessionKind.FAMILY_CALL,
        title="Sunday call with Grandma",
        participants=(
            Participant("usr_fam", ParticipantRole.HOST),
            Participant("usr_pat", ParticipantRole.FAMILY),
        ),
        clinic_id=None,
    )


def codes(concepts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for concept in concepts for c in concept["coding"]}


def by_ref(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["actor"]["reference"]: p for p in resource["participant"]}


def check_appointment_codes(resource: dict[str, Any]) -> None:
    assert resource["status"] in APPOINTMENT_STATUS
    assert {c["code"] for c in resource["appointmentType"]["coding"]} <= APPOINTMENT_TYPE
    for p in resource["participant"]:
        assert p["status"] in PARTICIPATION_STATUS
        assert p["required"] in PARTICIPANT_REQUIRED
        assert codes(p.get("type", [])) <= PARTICIPANT_TYPE
        assert p["actor"]["reference"].split("/")[0] in APPOINTMENT_ACTORS


# --- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ses_Ab-c_9", "usr_x", "usr_-_-_", "a", "ses_" + "x" * 60])
def test_ids_round_trip_and_are_valid_fhir_ids(value: str) -> None:
    out = fhir.fhir_id(value)
    assert fhir._FHIR_ID.fullmatch(out)
    assert fhir.our_id(out) == value


def test_fhir_id_is_idempotent() -> None:
    assert fhir.fhir_id(fhir.fhir_id("usr_doc_A")) == "usr.doc.A"
    assert fhir.fhir_id("a.b") == "a.b"


@pytest.mark.parametrize("value", ["", "a_b.c", "a b", "x" * 65, "ses_é"])
def test_unrepresentable_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        fhir.fhir_id(value)


def test_our_id_refuses_non_fhir_ids() -> None:
    with pytest.raises(ValueError):
        fhir.our_id("a/b")


def test_instant_is_utc_with_z() -> None:
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin"))
    assert fhir.instant(berlin) == "2026-10-22T07:00:00Z"
    assert fhir.instant(T0 + timedelta(microseconds=1500)) == "2026-10-22T07:00:00.001Z"
    with pytest.raises(ValueError):
        fhir.instant(datetime(2026, 1, 1))


def test_slot_ids_round_trip() -> None:
    sid = fhir.slot_id("usr_doc_A", T0)
    assert sid == "usr.doc.A.20261022T0700Z"
    assert fhir.parse_slot_id(sid) == ("usr_doc_A", T0)
    for bad in ("20261022T0700Z", "usr.x.2026", "usr x.20261022T0700Z"):
        with pytest.raises(ValueError):
            fhir.parse_slot_id(bad)


# --- Appointment -------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(SessionStatus))
def test_every_status_is_a_valid_appointment(status: SessionStatus) -> None:
    resource = fhir.appointment(checkup(status), PEOPLE, BASE, VIDEO)
    Appointment.model_validate(resource)
    assert resource["status"] == status.value
    check_appointment_codes(resource)


def test_appointment_fields() -> None:
    resource = fhir.appointment(checkup(), PEOPLE, BASE, VIDEO)
    model = Appointment.model_validate(resource)
    assert model.id == "ses.Ab-c.9"
    assert resource["identifier"] == [
        {"system": "https://broker.example/api/v1/sessions", "value": "ses_Ab-c_9"}
    ]
    assert resource["description"] == "Blood pressure review"
    assert resource["start"] == "2026-10-22T07:00:00Z"
    assert resource["end"] == "2026-10-22T07:20:00Z"
    assert resource["minutesDuration"] == 20
    assert resource["created"] == "2026-10-20T07:00:00Z"
    assert resource["meta"]["lastUpdated"] == "2026-10-21T07:00:00.001Z"
    assert resource["appointmentType"]["coding"][0]["code"] == "CHECKUP"
    tz = {"url": "http://hl7.org/fhir/StructureDefinition/tz-code", "valueCode": "Europe/Berlin"}
    assert resource["_start"]["extension"] == [tz]
    assert resource["_end"]["extension"] == [tz]


def test_appointment_participants() -> None:
    resource = fhir.appointment(checkup(), PEOPLE, BASE, VIDEO)
    parts = by_ref(resource)
    assert list(parts) == [
        "Practitioner/usr.doc.A",
        "Practitioner/usr.doc-B",
        "Patient/usr.pat",
        "RelatedPerson/usr.fam",
        "RelatedPerson/usr.int",
        "RelatedPerson/inv.guest",
    ]
    v3 = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
    assert codes(parts["Practitioner/usr.doc.A"]["type"]) == {(v3, "PPRF")}
    assert codes(parts["Practitioner/usr.doc-B"]["type"]) == {(v3, "SPRF")}
    assert "type" not in parts["Patient/usr.pat"]
    assert codes(parts["RelatedPerson/usr.fam"]["type"]) == {(v3, "PART")}
    assert codes(parts["RelatedPerson/usr.int"]["type"]) == {
        ("http://terminology.hl7.org/CodeSystem/participant-type", "translator")
    }
    assert parts["Practitioner/usr.doc.A"]["actor"]["display"] == "Dr Ada Lovelace"
    assert parts["RelatedPerson/inv.guest"]["actor"]["display"] == "Gus Guest"
    assert all(p["required"] == "required" and p["status"] == "accepted" for p in parts.values())


def test_appointment_leaks_no_email_or_notes() -> None:
    text = repr(fhir.appointment(checkup(), PEOPLE, BASE, VIDEO))
    assert "@" not in text
    assert "private clinical note" not in text


def test_unknown_people_have_no_display() -> None:
    resource = fhir.appointment(checkup(), {}, BASE, VIDEO)
    Appointment.model_validate(resource)
    parts = by_ref(resource)
    assert "display" not in parts["Patient/usr.pat"]["actor"]
    assert parts["RelatedPerson/inv.guest"]["actor"]["display"] == "Gus Guest"


def test_family_call_has_no_practitioner() -> None:
    resource = fhir.appointment(family_call(), PEOPLE, BASE, VIDEO)
    Appointment.model_validate(resource)
    check_appointment_codes(resource)
    assert list(by_ref(resource)) == ["RelatedPerson/usr.fam", "RelatedPerson/usr.pat"]
    assert resource["appointmentType"]["coding"][0]["code"] == "ROUTINE"


def test_virtual_service_extension() -> None:
    resource = fhir.appointment(checkup(), PEOPLE, BASE, VIDEO)
    (ext,) = resource["extension"]
    assert ext["url"] == (
        "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
    )
    assert not any(key.startswith("value") for key in ext)  # complex: sub-extensions only
    subs = {e["url"]: e for e in ext["extension"]}
    assert set(subs) == {"channelType", "address", "maxParticipants"}
    assert subs["channelType"]["valueCoding"]["system"] == "urn:citycall:virtual-service"
    assert subs["channelType"]["valueCoding"]["code"] == "citycall-webrtc"
    assert subs["address"]["valueUrl"] == VIDEO
    assert subs["maxParticipants"]["valuePositiveInt"] == 6


# --- Slot, Schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(("free", "status"), [(True, "free"), (False, "busy")])
def test_slot(free: bool, status: str) -> None:
    resource = fhir.slot("usr_doc_A", T0, T0 + timedelta(minutes=20), free)
    model = Slot.model_validate(resource)
    assert model.status == status
    assert resource["status"] in SLOT_STATUS
    assert resource["schedule"] == {"reference": "Schedule/usr.doc.A"}
    assert resource["start"] == "2026-10-22T07:00:00Z"
    assert resource["end"] == "2026-10-22T07:20:00Z"
    assert resource["id"] == fhir.slot_id("usr_doc_A", T0)
    for schedule_id in ("sch_2", "sch.2"):  # our id, or already its FHIR form
        other = fhir.slot("usr_doc_A", T0, T0 + timedelta(minutes=20), free, schedule_id)
        assert other["schedule"] == {"reference": "Schedule/sch.2"}


def availability() -> Availability:
    return Availability(
        clinician_id="usr_doc_A",
        clinic_id="cln_1",
        time_zone="Europe/Berlin",
        slot_minutes=20,
        weekly=(
            WeeklyHours(2, time(13), time(17)),
            WeeklyHours(0, time(9), time(12, 30)),
        ),
        updated_at=T0,
    )


def test_schedule() -> None:
    doc = PEOPLE["usr_doc_A"]
    resource = fhir.schedule(availability(), doc)
    Schedule.model_validate(resource)
    assert resource["id"] == "usr.doc.A"
    assert resource["active"] is True
    assert resource["actor"] == [
        {"reference": "Practitioner/usr.doc.A", "display": "Dr Ada Lovelace"}
    ]
    assert resource["meta"] == {"lastUpdated": "2026-10-22T07:00:00Z"}
    assert resource["comment"] == (
        "Weekly hours (Europe/Berlin): Mon 09:00-12:30, Wed 13:00-17:00; 20-minute slots"
    )
    assert "planningHorizon" not in resource
    assert "@" not in repr(resource)

    horizon = (T0, T0 + timedelta(days=7))
    resource = fhir.schedule(replace(availability(), updated_at=None), doc, horizon)
    Schedule.model_validate(resource)
    assert resource["planningHorizon"] == {
        "start": "2026-10-22T07:00:00Z",
        "end": "2026-10-29T07:00:00Z",
    }
    assert "meta" not in resource
    assert fhir.schedule(availability(), replace(doc, disabled=True))["active"] is False


def test_schedule_refuses_another_clinicians_hours() -> None:
    with pytest.raises(ValueError):
        fhir.schedule(availability(), PEOPLE["usr_doc-B"])


# --- Bundle ------------------------------------------------------------------------------


def test_bundle_of_every_kind() -> None:
    resources = [
        fhir.appointment(checkup(), PEOPLE, BASE, VIDEO),
        fhir.slot("usr_doc_A", T0, T0 + timedelta(minutes=20), True),
        fhir.schedule(availability(), PEOPLE["usr_doc_A"]),
    ]
    self_url = f"{BASE}/fhir/Appointment?patient=usr.pat"
    resource = fhir.bundle(resources, BASE + "/", self_url)
    model = Bundle.model_validate(resource)
    assert model.type == "searchset"
    assert resource["total"] == 3
    assert resource["link"] == [{"relation": "self", "url": self_url}]
    assert [e["fullUrl"] for e in resource["entry"]] == [
        f"{BASE}/fhir/Appointment/ses.Ab-c.9",
        f"{BASE}/fhir/Slot/usr.doc.A.20261022T0700Z",
        f"{BASE}/fhir/Schedule/usr.doc.A",
    ]
    assert all(e["search"] == {"mode": "match"} for e in resource["entry"])
    assert [e["resource"] for e in resource["entry"]] == resources


def test_empty_and_paged_bundles() -> None:
    empty = fhir.bundle([], BASE, f"{BASE}/fhir/Slot")
    Bundle.model_validate(empty)
    assert empty["total"] == 0
    assert "entry" not in empty  # FHIR JSON has no empty arrays

    page = fhir.bundle(
        [fhir.slot("usr_doc_A", T0, T0 + timedelta(minutes=20), True)],
        BASE,
        f"{BASE}/fhir/Slot?_count=1",
        total=5,
        next_url=f"{BASE}/fhir/Slot?_count=1&page=2",
    )
    Bundle.model_validate(page)
    assert page["total"] == 5
    assert [link["relation"] for link in page["link"]] == ["self", "next"]
