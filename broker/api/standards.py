"""Standard views other systems read: FHIR R4 (Appointment, Slot, Schedule) and iCalendar."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

from broker.api import session_schemas as s
from broker.api.context import SETTINGS, services
from broker.api.web import Query, Route, principal, respond
from broker.domain import User, utcnow
from broker.errors import InvalidInput, NotFound
from broker.formats import fhir, ical
from broker.policy import Principal
from broker.scheduling import access
from broker.scheduling.model import Session, SessionStatus
from broker.store.schedule_base import SessionQuery
from broker.tokens import opaque_secret, secret_hash

FHIR_JSON = "application/fhir+json"
CALENDAR = "text/calendar"
_PREFIXES = ("ge", "gt", "le", "lt", "eq")


def fhir_response(body: dict[str, Any]) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), content_type=FHIR_JSON)


def _ours(value: str, kind: str, field: str) -> str:
    """``Patient/abc`` or ``abc`` (a FHIR id) -> our id."""
    ref = value.split("/", 1)[1] if value.startswith(kind + "/") else value
    try:
        return fhir.our_id(ref)
    except ValueError:
        raise InvalidInput(f"{field} is not a {kind} reference", field=field) from None


def date_range(values: Iterable[str]) -> tuple[datetime | None, datetime | None]:
    """FHIR ``date`` search parameters (``2026-12-01``, ``ge2026-12-01``, ...) -> a range."""
    low: datetime | None = None
    high: datetime | None = None
    for raw in values:
        prefix = raw[:2] if raw[:2] in _PREFIXES else "eq"
        text = raw[2:] if raw[:2] in _PREFIXES else raw
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"bad date {raw!r}", field="date") from None
        day_only = len(text) == 10
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        span = timedelta(days=1) if day_only else timedelta(0)
        if prefix in ("ge", "gt", "eq"):
            low = moment if prefix != "gt" else moment + span
        if prefix in ("le", "lt", "eq"):
            high = moment + span if prefix != "lt" else moment
            if prefix == "le" and not day_only:
                high = moment + timedelta(microseconds=1)
    return low, high


async def _people(request: web.Request, sessions: Iterable[Session]) -> dict[str, User]:
    store = services(request).store
    people: dict[str, User] = {}
    for session in sessions:
        for uid in session.member_ids:
            if uid not in people:
                user = await store.get_user(uid)
                if user is not None:
                    people[uid] = user
    return people


def _video_url(request: web.Request, session: Session) -> str:
    return ical.join_url(request.app[SETTINGS].base_url, session.id)


async def _visible(request: web.Request, by: Principal, session_id: str) -> Session:
    try:
        ours = fhir.our_id(session_id)
    except ValueError:
        raise NotFound("no such appointment") from None
    return await services(request).scheduling.get(by, ours)


async def read_appointment(request: web.Request) -> web.Response:
    session = await _visible(request, principal(request), request.match_info["id"])
    base = request.app[SETTINGS].base_url
    people = await _people(request, [session])
    return fhir_response(fhir.appointment(session, people, base, _video_url(request, session)))


async def search_appointments(request: web.Request) -> web.Response:
    by = principal(request)
    q = request.query
    patient = _ours(q["patient"], "Patient", "patient") if "patient" in q else None
    doctor = (
        _ours(q["practitioner"], "Practitioner", "practitioner") if "practitioner" in q else None
    )
    low, high = date_range(q.getall("date", []))
    try:
        statuses = tuple(SessionStatus(x) for x in q["status"].split(",")) if "status" in q else ()
    except ValueError:
        raise InvalidInput("unknown status", field="status") from None
    user = patient or doctor
    if user is None and by.clinic_id is None:
        user = by.subject
    query = SessionQuery(
        user_id=user,
        clinic_id=None if user else by.clinic_id,
        starts_from=low,
        starts_before=high,
        statuses=statuses,
        limit=500,
    )
    found = [
        x
        for x in await services(request).store.list_sessions(query)
        if access.can_see(by, x)
        and (doctor is None or doctor in x.member_ids)
        and (patient is None or patient in x.member_ids)
    ]
    base = request.app[SETTINGS].base_url
    people = await _people(request, found)
    resources = [fhir.appointment(x, people, base, _video_url(request, x)) for x in found]
    return fhir_response(fhir.bundle(resources, base, str(request.url)))


async def _schedule(request: web.Request, clinician_id: str) -> dict[str, Any]:
    svc = services(request)
    av = await svc.scheduling.availability(clinician_id)
    user = await svc.store.get_user(clinician_id)
    if user is None:
        raise NotFound("no such schedule")
    return fhir.schedule(av, user)


async def read_schedule(request: web.Request) -> web.Response:
    try:
        clinician_id = fhir.our_id(request.match_info["id"])
    except ValueError:
        raise NotFound("no such schedule") from None
    return fhir_response(await _schedule(request, clinician_id))


async def search_schedules(request: web.Request) -> web.Response:
    by = principal(request)
    q = request.query
    store = services(request).store
    if "actor" in q:
        ids = [_ours(q["actor"], "Practitioner", "actor")]
    elif by.clinic_id is not None:
        ids = [a.clinician_id for a in await store.list_availability(by.clinic_id)]
    else:
        raise InvalidInput("give actor=Practitioner/<id>", field="actor")
    found = []
    for clinician_id in ids:
        try:
            found.append(await _schedule(request, clinician_id))
        except NotFound:
            continue
    base = request.app[SETTINGS].base_url
    return fhir_response(fhir.bundle(found, base, str(request.url)))


async def search_slots(request: web.Request) -> web.Response:
    q = request.query
    if "schedule" not in q:
        raise InvalidInput("give schedule=Schedule/<id>", field="schedule")
    clinician_id = _ours(q["schedule"], "Schedule", "schedule")
    low, high = date_range(q.getall("start", []))
    frm = low or utcnow()
    to = high or frm + timedelta(days=7)
    free = await services(request).scheduling.free_slots(clinician_id, frm, to)
    schedule_id = fhir.fhir_id(clinician_id)
    resources = [fhir.slot(clinician_id, a, b, True, schedule_id) for a, b in free]
    if q.get("status", "free") not in ("free",):
        resources = []
    base = request.app[SETTINGS].base_url
    return fhir_response(fhir.bundle(resources, base, str(request.url)))


async def session_ics(request: web.Request) -> web.Response:
    by = principal(request)
    session = await services(request).scheduling.get(by, request.match_info["session_id"])
    people = await _people(request, [session])
    body = ical.session_event(
        session,
        people,
        None,
        request.app[SETTINGS].base_url,
        _video_url(request, session),
        "CANCEL" if session.status is SessionStatus.CANCELLED else "REQUEST",
        now=utcnow(),
    )
    response = web.Response(body=body, content_type=CALENDAR, charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{session.id}.ics"'
    return response


async def new_feed(request: web.Request) -> web.Response:
    by = principal(request)
    token = opaque_secret()
    await services(request).store.set_feed_token(by.subject, secret_hash(token))
    return respond(s.FeedOut(url=f"{request.app[SETTINGS].base_url}/calendar/{token}.ics"), 201)


async def feed(request: web.Request) -> web.Response:
    svc = services(request)
    user_id = await svc.store.get_feed_user(secret_hash(request.match_info["token"]))
    user = await svc.store.get_user(user_id) if user_id else None
    if user is None or user.disabled:
        raise NotFound("no such calendar feed", code="invalid_feed_token")
    now = utcnow()
    sessions = await svc.store.list_sessions(
        SessionQuery(user_id=user.id, starts_from=now - timedelta(days=30), limit=1000)
    )
    people = await _people(request, sessions)
    body = ical.feed(
        sessions,
        people,
        user.time_zone,
        request.app[SETTINGS].base_url,
        now,
        video_url=lambda x: _video_url(request, x),
    )
    response = web.Response(body=body, content_type=CALENDAR, charset="utf-8")
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


_FHIR_ERRORS = (401, 404, 422)
ROUTES = (
    Route(
        "GET",
        "/fhir/Appointment/{id}",
        read_appointment,
        "A session as a FHIR R4 Appointment",
        "fhir",
        auth="user_or_key",
        errors=_FHIR_ERRORS,
    ),
    Route(
        "GET",
        "/fhir/Appointment",
        search_appointments,
        "Search Appointments: a searchset Bundle",
        "fhir",
        auth="user_or_key",
        errors=_FHIR_ERRORS,
        query=(
            Query("patient", "Patient/<id>"),
            Query("practitioner", "Practitioner/<id>"),
            Query("date", "FHIR date with optional ge/gt/le/lt prefix"),
            Query("status", "comma-separated appointment statuses"),
        ),
    ),
    Route(
        "GET",
        "/fhir/Schedule/{id}",
        read_schedule,
        "A clinician's availability as a FHIR Schedule",
        "fhir",
        auth="user_or_key",
        errors=_FHIR_ERRORS,
    ),
    Route(
        "GET",
        "/fhir/Schedule",
        search_schedules,
        "Search Schedules",
        "fhir",
        auth="user_or_key",
        errors=_FHIR_ERRORS,
        query=(Query("actor", "Practitioner/<id>"),),
    ),
    Route(
        "GET",
        "/fhir/Slot",
        search_slots,
        "Free Slots of a Schedule",
        "fhir",
        auth="user_or_key",
        errors=_FHIR_ERRORS,
        query=(
            Query("schedule", "Schedule/<id>", required=True),
            Query("start", "FHIR date with optional ge/gt/le/lt prefix"),
            Query("status", "free (the only status listed)"),
        ),
    ),
    Route(
        "GET",
        "/api/v1/sessions/{session_id}/calendar.ics",
        session_ics,
        "The session as an iCalendar invitation (METHOD:REQUEST, or CANCEL)",
        "calendar",
        auth="user_or_key",
        errors=(401, 404),
    ),
    Route(
        "POST",
        "/api/v1/me/calendar-feed",
        new_feed,
        "A new private calendar feed URL (the previous one stops working)",
        "calendar",
        auth="user",
        response=s.FeedOut,
        status=201,
        errors=(401,),
    ),
    Route(
        "GET",
        "/calendar/{token}.ics",
        feed,
        "Your calendar feed (the token in the URL is the credential)",
        "calendar",
        errors=(404,),
    ),
)
