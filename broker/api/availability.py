"""Availability: who can be reached when. Clinicians' working hours and free slots, booking a
slot, a clinic site's video capacity, and the trusted contacts whose calls a TV answers."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from aiohttp import web

from broker.api import session_schemas as s
from broker.api.context import services
from broker.api.sessions import TIME_RANGE, query_instant, session_out
from broker.api.web import Route, principal, read_body, respond
from broker.domain import utcnow
from broker.errors import InvalidInput
from broker.scheduling.model import Availability, AvailabilityException, Quality, WeeklyHours


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


ROUTES = (
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
        query=TIME_RANGE,
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
