"""FHIR R4 views of scheduling: Appointment, Slot, Schedule and searchset Bundles.

Pure functions from our value types to FHIR JSON (plain dicts); no I/O. ``base_url`` is the
broker's public root (``https://broker.example``); the FHIR base is ``base_url + FHIR_PATH``.

Ids: our ids (``ses_AbC-12_x``) contain ``_``, which a FHIR id may not (``[A-Za-z0-9\\-.]``).
Token ids never contain ``.``, so :func:`fhir_id` swaps ``_`` for ``.`` and :func:`our_id`
swaps it back; both directions are exact.

Privacy: names come only from ``people`` (or a guest's own invite name); never e-mail
addresses, notes, invite secrets or session keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from broker.domain import User
from broker.scheduling.model import (
    Availability,
    Participant,
    ParticipantRole,
    Session,
    SessionKind,
)

FHIR_PATH = "/fhir"
MIME_TYPE = "application/fhir+json"

# Extensions.
EXT_VIRTUAL_SERVICE = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
)
EXT_TZ_CODE = "http://hl7.org/fhir/StructureDefinition/tz-code"  # R4 name of R5 "timezone"

# Code systems.
V2_APPOINTMENT_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0276"
V3_PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/participant-type"  # R4: translator
SERVICE_TYPE = "urn:citycall:service-type"
VIRTUAL_SERVICE_TYPE = "urn:citycall:virtual-service"

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_SERVICE: dict[SessionKind, tuple[str, str]] = {
    SessionKind.CHECKUP: ("video-checkup", "Video check-up"),
    SessionKind.FAMILY_CALL: ("family-video-call", "Family video call"),
}
_APPOINTMENT_TYPE: dict[SessionKind, tuple[str, str]] = {
    SessionKind.CHECKUP: ("CHECKUP", "A routine check-up, such as an annual physical"),
    SessionKind.FAMILY_CALL: ("ROUTINE", "Routine appointment - default if not valued"),
}
_PPRF = (V3_PARTICIPATION_TYPE, "PPRF", "primary performer")
_SPRF = (V3_PARTICIPATION_TYPE, "SPRF", "secondary performer")
_PART = (V3_PARTICIPATION_TYPE, "PART", "Participation")
_TRANSLATOR = (PARTICIPANT_TYPE, "translator", "Translator")


def fhir_id(value: str) -> str:
    """Our id as a FHIR id (``usr_Ab_c`` -> ``usr.Ab.c``); ValueError if it cannot be one.

    Idempotent: a value that is already a FHIR id (has ``.``, no ``_``) comes back unchanged.
    """
    out = value.replace("_", ".")
    if ("_" in value and "." in value) or not _FHIR_ID.fullmatch(out):
        raise ValueError(f"not representable as a FHIR id: {value!r}")
    return out


def our_id(value: str) -> str:
    """The inverse of :func:`fhir_id`, for ids read from FHIR URLs and references."""
    if not _FHIR_ID.fullmatch(value):
        raise ValueError("not a FHIR id")
    return value.replace(".", "_")


def instant(moment: datetime) -> str:
    """An aware datetime as a FHIR instant in UTC (``2026-10-22T07:00:00Z``)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def slot_id(clinician_id: str, start: datetime) -> str:
    """A stable Slot id: the clinician and the UTC start minute (``usr.Ab.20261022T0700Z``)."""
    return f"{fhir_id(clinician_id)}.{start.astimezone(UTC):%Y%m%dT%H%M}Z"


def parse_slot_id(value: str) -> tuple[str, datetime]:
    """``(clinician_id, start)`` from a :func:`slot_id`; ValueError if it is not one."""
    head, _, stamp = value.rpartition(".")
    if not head:
        raise ValueError("not a slot id")
    start = datetime.strptime(stamp, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
    return our_id(head), start


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": text or display}


def _service_type(kind: SessionKind) -> list[dict[str, Any]]:
    code, display = _SERVICE[kind]
    return [_concept(SERVICE_TYPE, code, display)]


def _appointment_type(kind: SessionKind) -> dict[str, Any]:
    code, display = _APPOINTMENT_TYPE[kind]
    return _concept(V2_APPOINTMENT_TYPE, code, display)


def _tz_code(zone: str) -> dict[str, Any]:
    return {"extension": [{"url": EXT_TZ_CODE, "valueCode": zone}]}


def _actor_type(session: Session, p: Participant) -> str:
    if p.role is ParticipantRole.PATIENT:
        return "Patient"
    if p.role is ParticipantRole.HOST and session.kind is SessionKind.CHECKUP:
        return "Practitioner"
    return "RelatedPerson"  # family, interpreters, guests, and the organiser of a family call


def _participant_type(session: Session, p: Participant) -> tuple[str, str, str] | None:
    """A code from the R4 ParticipantType value set, or None (patients: the actor says it)."""
    if p.role is ParticipantRole.HOST:
        if session.kind is SessionKind.CHECKUP:
            return _PPRF if p.user_id == session.hosts[0] else _SPRF
        return _PART
    if p.role is ParticipantRole.INTERPRETER:
        return _TRANSLATOR
    if p.role is ParticipantRole.PATIENT:
        return None
    return _PART


def _participant(session: Session, p: Participant, people: Mapping[str, User]) -> dict[str, Any]:
    actor: dict[str, str] = {"reference": f"{_actor_type(session, p)}/{fhir_id(p.user_id)}"}
    person = people.get(p.user_id)
    name = person.display_name if person is not None else p.display_name
    if name:
        actor["display"] = name
    out: dict[str, Any] = {}
    kind = _participant_type(session, p)
    if kind is not None:
        out["type"] = [_concept(*kind)]
    out.update(actor=actor, required="required", status="accepted")
    return out


def _virtual_service(session: Session, video_url: str) -> dict[str, Any]:
    """R5 ``Appointment.virtualService`` as its R4 cross-version extension (no session key)."""
    channel = _coding(VIRTUAL_SERVICE_TYPE, "citycall-webrtc", "CityCall WebRTC video")
    return {
        "url": EXT_VIRTUAL_SERVICE,
        "extension": [
            {"url": "channelType", "valueCoding": channel},
            {"url": "address", "valueUrl": video_url},
            {"url": "maxParticipants", "valuePositiveInt": session.max_participants},
        ],
    }


def appointment(
    session: Session, people: Mapping[str, User], base_url: str, video_url: str
) -> dict[str, Any]:
    """A session as an R4 Appointment. Our statuses are FHIR appointment status codes."""
    root = base_url.rstrip("/")
    return {
        "resourceType": "Appointment",
        "id": fhir_id(session.id),
        "meta": {"lastUpdated": instant(session.updated_at)},
        "extension": [_virtual_service(session, video_url)],
        "identifier": [{"system": f"{root}/api/v1/sessions", "value": session.id}],
        "status": session.status.value,
        "serviceType": _service_type(session.kind),
        "appointmentType": _appointment_type(session.kind),
        "description": session.title,
        "start": instant(session.start),
        "_start": _tz_code(session.time_zone),
        "end": instant(session.end),
        "_end": _tz_code(session.time_zone),
        "minutesDuration": int((session.end - session.start).total_seconds() // 60),
        "created": instant(session.created_at),
        "participant": [_participant(session, p, people) for p in session.participants],
    }


def slot(
    clinician_id: str,
    start: datetime,
    end: datetime,
    free: bool,
    schedule_id: str | None = None,
) -> dict[str, Any]:
    """One bookable (``free``) or taken (``busy``) slot of a clinician's schedule.

    ``schedule_id`` (our id or its FHIR form) defaults to the clinician's own schedule (see
    :func:`schedule`, whose id is the clinician's).
    """
    return {
        "resourceType": "Slot",
        "id": slot_id(clinician_id, start),
        "serviceType": _service_type(SessionKind.CHECKUP),
        "appointmentType": _appointment_type(SessionKind.CHECKUP),
        "schedule": {"reference": f"Schedule/{fhir_id(schedule_id or clinician_id)}"},
        "status": "free" if free else "busy",
        "start": instant(start),
        "end": instant(end),
    }


def _hours(av: Availability) -> str:
    weekly = sorted(av.weekly, key=lambda w: (w.weekday, w.start))
    spans = ", ".join(f"{_WEEKDAYS[w.weekday]} {w.start:%H:%M}-{w.end:%H:%M}" for w in weekly)
    return f"Weekly hours ({av.time_zone}): {spans or 'none'}; {av.slot_minutes}-minute slots"


def schedule(
    availability: Availability,
    clinician: User,
    horizon: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    """A clinician's video check-up Schedule; its id is the clinician's.

    ``horizon`` is the planning horizon the caller searched slots in, if any.
    """
    if clinician.id != availability.clinician_id:
        raise ValueError("availability of another clinician")
    out: dict[str, Any] = {"resourceType": "Schedule", "id": fhir_id(clinician.id)}
    if availability.updated_at is not None:
        out["meta"] = {"lastUpdated": instant(availability.updated_at)}
    out.update(
        active=not clinician.disabled,
        serviceType=_service_type(SessionKind.CHECKUP),
        actor=[
            {
                "reference": f"Practitioner/{fhir_id(clinician.id)}",
                "display": clinician.display_name,
            }
        ],
    )
    if horizon is not None:
        out["planningHorizon"] = {"start": instant(horizon[0]), "end": instant(horizon[1])}
    out["comment"] = _hours(availability)
    return out


def bundle(
    resources: Sequence[dict[str, Any]],
    base_url: str,
    self_url: str,
    *,
    total: int | None = None,
    next_url: str | None = None,
) -> dict[str, Any]:
    """A searchset Bundle of matches. ``total`` defaults to ``len(resources)`` (one page)."""
    base = base_url.rstrip("/") + FHIR_PATH
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources) if total is None else total,
        "link": links,
    }
    if resources:  # FHIR JSON never carries an empty array
        out["entry"] = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return out
