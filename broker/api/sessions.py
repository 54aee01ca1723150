"""Scheduling routes: sessions, joining, invites, availability, slots, capacity."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from aiohttp import web

from broker.api import session_schemas as s
from broker.api.context import SETTINGS, services
from broker.api.web import Query, Route, no_content, principal, read_body, respond
from broker.domain import utcnow
from broker.errors import InvalidInput
from broker.policy import Principal
from broker.scheduling.joining import JoinGrant
from broker.scheduling.model import (
    Availability,
    AvailabilityException,
    ParticipantRole,
    Quality,
    Session,
    SessionKind,
    SessionStatus,
    WeeklyHours,
)
from broker.scheduling.service import NewSession
from broker.turn import ice_servers


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


def join_out(request: web.Request, grant: JoinGrant) -> s.JoinOut:
    settings = request.app[SETTINGS]
    base = settings.public_url or f"{request.scheme}://{request.host}"
    ws = base.rstrip("/").replace("http", "ws", 1) + "/ws"
    ice = [s.IceServer(**server) for server in ice_servers(settings, grant.subject, utcnow())]
    return s.JoinOut.of(grant, ws, ice)


async def join(request: web.Request) -> web.Response:
    grant = await services(request).joining.join(
        principal(request), request.match_info["session_id"]
    )
    return respond(join_out(request, grant))


async def redeem(request: web.Request) -> web.Response:
    body = await read_body(request, s.Redeem)
    grant = await services(request).joining.redeem(body.token)
    return respond(join_out(request, grant))


async def create_invite(request: web.Request) -> web.Response:
    body = await read_body(request, s.InviteCreate)
    issued = await services(request).joining.create_invite(
        principal(request),
        request.match_info["session_id"],
        ParticipantRole(body.role),
        body.display_name,
        timedelta(seconds=body.expires_in) if body.expires_in else None,
        body.max_uses,
    )
    url = f"{request.app[SETTINGS].base_url}/join#invite={issued.token}"
    return respond(
        s.InviteCreated(invite=s.InviteOut.of(issued.invite), token=issued.token, url=url), 201
    )


async def list_invites(request: web.Request) -> web.Response:
    found = await services(request).joining.list_invites(
        principal(request), request.match_info["session_id"]
    )
    return respond(s.InviteList(items=[s.InviteOut.of(i) for i in found]))


async def revoke_invite(request: web.Request) -> web.Response:
    await services(request).joining.revoke_invite(
        principal(request), request.match_info["session_id"], request.match_info["invite_id"]
    )
    return no_content()


async def audit(request: web.Request) -> web.Response:
    entries = await services(request).joining.audit(
        principal(request), request.match_info["session_id"]
    )
    return respond(s.AuditList(items=[s.AuditOut.of(a) for a in entries]))


def _time(text: str) -> time:
    return time.fromisoformat(text)


async def put_availability(request: web.Request) -> web.Response:
    body = await read_body(request, s.AvailabilityIn)
    try:
        av = Availability(
            clinician_id=request.match_info["clinician_id"],
            clinic_id="",
            time_zone=body.time_zone,
            slot_minutes=body.slot_minutes,
            weekly=tuple(WeeklyHours(w.weekday, _time(w.start), _time(w.end)) for w in body.weekly),
            exceptions=tuple(
                AvailabilityException(
                    datetime.fromisoformat(e.day).date(),
                    _time(e.start) if e.start else None,
                    _time(e.end) if e.end else None,
                    e.available,
                )
                for e in body.exceptions
            ),
            quality=Quality(body.quality),
        )
    except ValueError as exc:
        raise InvalidInput(f"bad date or time: {exc}") from None
    stored = await services(request).scheduling.set_availability(principal(request), av)
    return respond(s.AvailabilityOut.of(stored))


async def get_availability(request: web.Request) -> web.Response:
    av = await services(request).scheduling.availability(request.match_info["clinician_id"])
    return respond(s.AvailabilityOut.of(av))


async def list_slots(request: web.Request) -> web.Response:
    now = utcnow()
    frm = query_instant(request, "from") or now
    to = query_instant(request, "to") or frm + timedelta(days=7)
    clinician_id = request.match_info["clinician_id"]
    found = await services(request).scheduling.free_slots(clinician_id, frm, to)
    return respond(
        s.SlotList(clinician_id=clinician_id, items=[s.SlotOut(start=a, end=b) for a, b in found])
    )


async def book_slot(request: web.Request) -> web.Response:
    body = await read_body(request, s.SlotBooking)
    by = principal(request)
    booked = await services(request).scheduling.book_slot(
        by, body.clinician_id, body.start, body.title
    )
    return respond(await session_out(request, booked, by), 201)


async def put_capacity(request: web.Request) -> web.Response:
    body = await read_body(request, s.Capacity)
    clinic_id = request.match_info["clinic_id"]
    svc = services(request)
    name = body.name or (await svc.accounts.get_clinic(clinic_id)).name
    site = await svc.scheduling.set_site_capacity(
        principal(request), clinic_id, name, int(body.capacity_mbps * 1000)
    )
    return respond(
        s.CapacityOut(site_id=site.id, name=site.name, capacity_mbps=site.capacity_kbps / 1000)
    )


async def get_trusted(request: web.Request) -> web.Response:
    found = await services(request).store.get_trusted_contacts(principal(request).subject)
    return respond(s.TrustedContactsOut(user_ids=list(found)))


async def put_trusted(request: web.Request) -> web.Response:
    body = await read_body(request, s.TrustedContacts)
    saved = await services(request).scheduling.set_trusted_contacts(
        principal(request), body.user_ids
    )
    return respond(s.TrustedContactsOut(user_ids=list(saved)))


_S = "/api/v1/sessions/{session_id}"
_TIME_RANGE = (
    Query("from", "sessions starting at or after (ISO 8601 with offset)", format="date-time"),
    Query("to", "sessions starting before (ISO 8601 with offset)", format="date-time"),
)
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
            *_TIME_RANGE,
            Query("status", "comma-separated statuses"),
            Query("clinic_id", "the clinic's sessions (staff, API keys)"),
            Query("user_id", "sessions of one participant (staff, API keys)"),
        ),
    ),
    Route(
        "GET",
        _S,
        get_session,
        "One session",
        "sessions",
        auth="user_or_key",
        response=s.SessionOut,
        errors=(401, 404),
    ),
    Route(
        "PATCH",
        _S,
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
        _S + "/cancel",
        cancel,
        "Cancel a session",
        "sessions",
        auth="user_or_key",
        body=s.Cancel,
        response=s.SessionOut,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "POST",
        _S + "/join",
        join,
        "Get a join token, the signaling URL and ICE servers (inside the join window)",
        "joining",
        auth="user",
        response=s.JoinOut,
        errors=(401, 404, 409),
    ),
    Route(
        "POST",
        _S + "/invites",
        create_invite,
        "Invite a guest (interpreter, family member): an expiring, limited-use link",
        "joining",
        auth="user_or_key",
        body=s.InviteCreate,
        response=s.InviteCreated,
        status=201,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "GET",
        _S + "/invites",
        list_invites,
        "The session's invites (hosts)",
        "joining",
        auth="user_or_key",
        response=s.InviteList,
        errors=(401, 403, 404),
    ),
    Route(
        "DELETE",
        _S + "/invites/{invite_id}",
        revoke_invite,
        "Revoke an invite",
        "joining",
        auth="user_or_key",
        status=204,
        errors=(401, 403, 404),
    ),
    Route(
        "POST",
        "/api/v1/invites/redeem",
        redeem,
        "A guest trades an invite link's token for a join token",
        "joining",
        body=s.Redeem,
        response=s.JoinOut,
        errors=(404, 409, 422),
    ),
    Route(
        "GET",
        _S + "/audit",
        audit,
        "Who joined, was admitted, left, and when (ids only)",
        "sessions",
        auth="user_or_key",
        response=s.AuditList,
        errors=(401, 403, 404),
    ),
    Route(
        "PUT",
        "/api/v1/clinicians/{clinician_id}/availability",
        put_availability,
        "Publish weekly working hours, slot length and exceptions",
        "availability",
        auth="user",
        body=s.AvailabilityIn,
        response=s.AvailabilityOut,
        errors=(401, 403, 404, 422),
    ),
    Route(
        "GET",
        "/api/v1/clinicians/{clinician_id}/availability",
        get_availability,
        "A clinician's published availability",
        "availability",
        auth="user_or_key",
        response=s.AvailabilityOut,
        errors=(401, 404),
    ),
    Route(
        "GET",
        "/api/v1/clinicians/{clinician_id}/slots",
        list_slots,
        "A clinician's free slots",
        "availability",
        auth="user_or_key",
        response=s.SlotList,
        errors=(401, 404, 422),
        query=_TIME_RANGE,
    ),
    Route(
        "POST",
        "/api/v1/slots/book",
        book_slot,
        "A patient books a free slot",
        "availability",
        auth="user",
        body=s.SlotBooking,
        response=s.SessionOut,
        status=201,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "GET",
        "/api/v1/me/trusted-contacts",
        get_trusted,
        "People whose calls your TV answers by itself",
        "calls",
        auth="user",
        response=s.TrustedContactsOut,
        errors=(401,),
    ),
    Route(
        "PUT",
        "/api/v1/me/trusted-contacts",
        put_trusted,
        "Set the people whose calls your TV answers by itself (family members)",
        "calls",
        auth="user",
        body=s.TrustedContacts,
        response=s.TrustedContactsOut,
        errors=(401, 403, 422),
    ),
    Route(
        "PUT",
        "/api/v1/clinics/{clinic_id}/capacity",
        put_capacity,
        "Set the clinic site's video bandwidth in Mbit/s (admins)",
        "availability",
        auth="user",
        body=s.Capacity,
        response=s.CapacityOut,
        errors=(401, 403, 404, 422),
    ),
)
