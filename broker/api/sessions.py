"""Sessions: booking, listing, rescheduling and cancelling them, and how one is shown."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from broker.api import session_schemas as s
from broker.api.context import services
from broker.api.web import Query, Route, principal, read_body, respond
from broker.errors import InvalidInput
from broker.policy import Principal
from broker.scheduling.model import Quality, Session, SessionKind, SessionStatus
from broker.scheduling.service import NewSession

SESSION_PATH = "/api/v1/sessions/{session_id}"
TIME_RANGE = (
    Query("from", "sessions starting at or after (ISO 8601 with offset)", format="date-time"),
    Query("to", "sessions starting before (ISO 8601 with offset)", format="date-time"),
)


def query_instant(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 date-time", field=name) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} needs a UTC offset", field=name)
    return value


async def session_out(request: web.Request, session: Session, by: Principal) -> s.SessionOut:
    svc = services(request)
    names: dict[str, str] = {}
    for p in session.participants:
        if p.display_name is None:
            user = await svc.store.get_user(p.user_id)
            if user is not None:
                names[p.user_id] = user.display_name
    window = svc.joining.window(session)
    staff = (
        session.clinic_id is not None
        and by.clinic_id == session.clinic_id
        and (by.is_staff or by.api_key)
    )
    return s.SessionOut.of(session, names, window.opens, window.closes, staff)


async def many(request: web.Request, sessions: list[Session], by: Principal) -> s.SessionList:
    return s.SessionList(items=[await session_out(request, x, by) for x in sessions])


async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, s.SessionCreate)
    by = principal(request)
    new = NewSession(
        kind=SessionKind(body.kind),
        title=body.title,
        start=body.start,
        end=body.end,
        time_zone=body.time_zone,
        clinician_id=body.clinician_id,
        patient_id=body.patient_id,
        participant_ids=tuple(body.participant_ids),
        quality=Quality(body.quality),
        max_participants=body.max_participants,
        allow_downgrade=body.allow_downgrade,
        recurrence=body.recurrence,
        site_id=body.site_id,
        notes=body.notes,
    )
    booked = await services(request).scheduling.create(by, new)
    return respond(await many(request, booked, by), 201)


async def list_sessions(request: web.Request) -> web.Response:
    by = principal(request)
    status = request.query.get("status")
    try:
        statuses = tuple(SessionStatus(x) for x in status.split(",")) if status else ()
    except ValueError:
        raise InvalidInput("unknown status", field="status") from None
    found = await services(request).scheduling.search(
        by,
        user_id=request.query.get("user_id") or None,
        clinic_id=request.query.get("clinic_id") or None,
        starts_from=query_instant(request, "from"),
        starts_before=query_instant(request, "to"),
        statuses=statuses,
    )
    return respond(await many(request, found, by))


async def get_session(request: web.Request) -> web.Response:
    by = principal(request)
    found = await services(request).scheduling.get(by, request.match_info["session_id"])
    return respond(await session_out(request, found, by))


async def reschedule(request: web.Request) -> web.Response:
    body = await read_body(request, s.Reschedule)
    by = principal(request)
    moved = await services(request).scheduling.reschedule(
        by, request.match_info["session_id"], body.start, body.end, body.allow_downgrade
    )
    return respond(await session_out(request, moved, by))


async def cancel(request: web.Request) -> web.Response:
    body = await read_body(request, s.Cancel) if request.can_read_body else s.Cancel()
    by = principal(request)
    done = await services(request).scheduling.cancel(
        by, request.match_info["session_id"], body.reason
    )
    return respond(await session_out(request, done, by))


ROUTES = (
    Route(
        "POST",
        "/api/v1/sessions",
        create_session,
        "Book a check-up (clinic staff or API key) or a family call (family members); "
        "recurring family calls book every occurrence",
        "sessions",
        auth="user_or_key",
        body=s.SessionCreate,
        response=s.SessionList,
        status=201,
        errors=(401, 403, 409, 422),
    ),
    Route(
        "GET",
        "/api/v1/sessions",
        list_sessions,
        "Sessions you may see: your own, or your clinic's",
        "sessions",
        auth="user_or_key",
        response=s.SessionList,
        errors=(401, 403, 422),
        query=(
            *TIME_RANGE,
            Query("status", "comma-separated statuses"),
            Query("clinic_id", "the clinic's sessions (staff, API keys)"),
            Query("user_id", "sessions of one participant (staff, API keys)"),
        ),
    ),
    Route(
        "GET",
        SESSION_PATH,
        get_session,
        "One session",
        "sessions",
        auth="user_or_key",
        response=s.SessionOut,
        errors=(401, 404),
    ),
    Route(
        "PATCH",
        SESSION_PATH,
        reschedule,
        "Reschedule (bumps the calendar SEQUENCE)",
        "sessions",
        auth="user_or_key",
        body=s.Reschedule,
        response=s.SessionOut,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "POST",
        SESSION_PATH + "/cancel",
        cancel,
        "Cancel a session",
        "sessions",
        auth="user_or_key",
        body=s.Cancel,
        response=s.SessionOut,
        errors=(401, 403, 404, 409, 422),
    ),
)
