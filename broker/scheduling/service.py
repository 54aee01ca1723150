"""Scheduling: book, read, list, reschedule and cancel sessions; availability and slots.

Booking rules are pure (``rules``, ``access``); atomicity is the store's ``book_session``.
Every change emits an event (ids only) to the ``EventSink``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from broker.accounts import check_time_zone
from broker.domain import Role, User, new_id, utcnow
from broker.errors import InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.scheduling import access, recurrence, rules, slots
from broker.scheduling.model import (
    AuditEntry,
    Availability,
    Event,
    Participant,
    ParticipantRole,
    Quality,
    Session,
    SessionKind,
    SessionStatus,
    Site,
)
from broker.store.base import Store
from broker.store.schedule_base import SessionQuery

log = logging.getLogger(__name__)

HOME_SITE = "home"
MAX_TRUSTED = 50
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SESSION_CANCELLED = "session.cancelled"


class EventSink(Protocol):
    async def emit(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class NewSession:
    kind: SessionKind
    title: str
    start: datetime
    end: datetime
    time_zone: str = "UTC"
    clinician_id: str | None = None  # check-ups
    patient_id: str | None = None  # check-ups
    participant_ids: tuple[str, ...] = ()  # family calls: the people called
    quality: Quality = Quality.HD
    max_participants: int | None = None
    allow_downgrade: bool = False
    recurrence: str | None = None  # family calls: RRULE subset
    site_id: str | None = None  # family calls: the neighbourhood network
    notes: str | None = None


def make_event(kind: str, session: Session, at: datetime, **data: str) -> Event:
    return Event(new_id("evt"), kind, session.id, session.clinic_id, at, dict(data))


class Scheduling:
    def __init__(
        self,
        store: Store,
        events: EventSink,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock

    # reading
    async def get(self, by: Principal, session_id: str) -> Session:
        session = await self._store.get_session(session_id)
        if session is None or not access.can_see(by, session):
            raise NotFound("no such session")
        return session

    async def search(
        self,
        by: Principal,
        user_id: str | None = None,
        clinic_id: str | None = None,
        starts_from: datetime | None = None,
        starts_before: datetime | None = None,
        statuses: tuple[SessionStatus, ...] = (),
        limit: int = 200,
    ) -> list[Session]:
        if clinic_id is not None:
            if not (by.clinic_id == clinic_id and (by.is_staff or by.api_key)):
                raise PermissionDenied("not a member of this clinic")
        elif user_id is None or not (by.is_staff or by.api_key):
            user_id = user_id or by.subject
            if user_id != by.subject and not (by.is_staff or by.api_key):
                raise PermissionDenied("you can list only your own sessions")
            if by.api_key and user_id == by.subject:
                clinic_id = by.clinic_id
                user_id = None
        query = SessionQuery(
            user_id=user_id,
            clinic_id=clinic_id,
            starts_from=starts_from,
            starts_before=starts_before,
            statuses=statuses,
            limit=limit,
        )
        found = await self._store.list_sessions(query)
        return [s for s in found if access.can_see(by, s)]

    # booking
    async def create(self, by: Principal, new: NewSession) -> list[Session]:
        """Book a session, or every occurrence of a recurring family call."""
        rules.validate_times(new.start, new.end)
        check_time_zone(new.time_zone)
        if not new.title.strip():
            raise InvalidInput("title is empty", field="title")
        if new.start < self._clock() - timedelta(minutes=5):
            raise InvalidInput("start is in the past", field="start")
        base = await self._build(by, new)
        if new.recurrence is None:
            return [await self._book(base, new.allow_downgrade, SESSION_CREATED)]
        if new.kind is not SessionKind.FAMILY_CALL:
            raise InvalidInput("only family calls recur", field="recurrence")
        rule = recurrence.parse(new.recurrence)
        series = new_id("ser")
        duration = new.end - new.start
        booked: list[Session] = []
        try:
            for i, start in enumerate(recurrence.occurrences(rule, new.start, new.time_zone)):
                occurrence = replace(
                    base,
                    id=base.id if i == 0 else new_id("ses"),
                    start=start,
                    end=start + duration,
                    series_id=series,
                )
                booked.append(await self._book(occurrence, new.allow_downgrade, None))
        except Exception:
            for s in booked:  # all or nothing: release what this series took
                await self._store.update_session(
                    replace(s, status=SessionStatus.CANCELLED, updated_at=self._clock())
                )
            raise
        for s in booked:
            await self._events.emit(make_event(SESSION_CREATED, s, self._clock()))
        return booked

    async def _build(self, by: Principal, new: NewSession) -> Session:
        now = self._clock()
        if new.kind is SessionKind.CHECKUP:
            clinic_id = by.clinic_id
            if clinic_id is None or not access.can_book_checkup(by, clinic_id):
                raise PermissionDenied("check-ups are booked by the clinic")
            clinician_id = new.clinician_id or (by.subject if by.role is Role.CLINICIAN else None)
            if clinician_id is None:
                raise InvalidInput("clinician_id is required", field="clinician_id")
            clinician = await self._user(clinician_id, "clinician_id")
            if not clinician.role.is_staff or clinician.clinic_id != clinic_id:
                raise InvalidInput("clinician is not staff of this clinic", field="clinician_id")
            if new.patient_id is None:
                raise InvalidInput("patient_id is required", field="patient_id")
            patient = await self._user(new.patient_id, "patient_id")
            if patient.role is not Role.PATIENT:
                raise InvalidInput("patient_id is not a patient", field="patient_id")
            people: tuple[Participant, ...] = (
                Participant(clinician.id, ParticipantRole.HOST),
                Participant(patient.id, ParticipantRole.PATIENT),
            )
            site_id = clinic_id
        else:
            if not access.can_book_family_call(by):
                raise PermissionDenied("family calls are set up by family members")
            others = [uid for uid in dict.fromkeys(new.participant_ids) if uid != by.subject]
            if not others:
                raise InvalidInput("call at least one person", field="participant_ids")
            members = [Participant(by.subject, ParticipantRole.HOST)]
            for uid in others:
                user = await self._user(uid, "participant_ids")
                if user.role not in (Role.FAMILY, Role.PATIENT):
                    raise InvalidInput(
                        "family calls are between family members", field="participant_ids"
                    )
                members.append(Participant(uid, ParticipantRole.FAMILY))
            people = tuple(members)
            clinic_id = None
            site_id = new.site_id or HOME_SITE
        limit = new.max_participants or rules.DEFAULT_MAX[new.kind]
        if not len(people) <= limit <= rules.MAX_PARTICIPANTS:
            raise InvalidInput(
                f"max_participants must be {len(people)}..{rules.MAX_PARTICIPANTS}",
                field="max_participants",
            )
        return Session(
            id=new_id("ses"),
            kind=new.kind,
            title=new.title.strip(),
            start=new.start,
            end=new.end,
            time_zone=new.time_zone,
            status=SessionStatus.BOOKED,
            quality=new.quality,
            max_participants=limit,
            participants=people,
            created_by=by.subject,
            created_at=now,
            updated_at=now,
            site_id=site_id,
            clinic_id=clinic_id,
            notes=new.notes,
        )

    async def _user(self, user_id: str, field: str) -> User:
        user = await self._store.get_user(user_id)
        if user is None or user.disabled:
            raise InvalidInput(f"no such user {user_id}", field=field)
        return user

    async def _book(self, candidate: Session, allow_downgrade: bool, event: str | None) -> Session:
        site = await self._store.get_site(candidate.site_id)
        capacity = site.capacity_kbps if site is not None else None

        def guard(others: Sequence[Session]) -> Session:
            return rules.admit_booking(candidate, others, capacity, allow_downgrade)

        horizon = rules.SUGGESTION_HORIZON + (candidate.end - candidate.start)
        booked = await self._store.book_session(
            candidate, guard, candidate.start, candidate.end + horizon
        )
        log.info(
            "session booked",
            extra={
                "session_id": booked.id,
                "kind": booked.kind.value,
                "quality": booked.quality.value,
            },
        )
        if event is not None:
            await self._events.emit(make_event(event, booked, self._clock()))
        return booked

    async def reschedule(
        self,
        by: Principal,
        session_id: str,
        start: datetime,
        end: datetime,
        allow_downgrade: bool = False,
    ) -> Session:
        session = await self._changeable(by, session_id)
        rules.validate_times(start, end)
        if start < self._clock() - timedelta(minutes=5):
            raise InvalidInput("start is in the past", field="start")
        moved = replace(
            session,
            start=start,
            end=end,
            sequence=session.sequence + 1,
            updated_at=self._clock(),
            status=SessionStatus.BOOKED,
        )
        booked = await self._book(moved, allow_downgrade, SESSION_UPDATED)
        await self._store.append_audit(
            AuditEntry(session.id, self._clock(), "rescheduled", by.subject)
        )
        return booked

    async def cancel(self, by: Principal, session_id: str, reason: str | None = None) -> Session:
        session = await self._changeable(by, session_id)
        cancelled = rules.transition(session, SessionStatus.CANCELLED, self._clock())
        cancelled = replace(cancelled, sequence=session.sequence + 1)
        await self._store.update_session(cancelled)
        await self._store.append_audit(
            AuditEntry(session.id, self._clock(), "cancelled", by.subject, reason=reason)
        )
        log.info("session cancelled", extra={"session_id": session.id})
        await self._events.emit(
            make_event(
                SESSION_CANCELLED,
                cancelled,
                self._clock(),
                **({"reason": reason} if reason else {}),
            )
        )
        return cancelled

    async def _changeable(self, by: Principal, session_id: str) -> Session:
        session = await self.get(by, session_id)
        if not access.can_change(by, session):
            raise PermissionDenied("you cannot change this session")
        if session.status.is_final:
            raise rules.BadTransition(f"session is {session.status.value}")
        return session

    # availability and slots
    async def set_availability(self, by: Principal, av: Availability) -> Availability:
        clinician = await self._store.get_user(av.clinician_id)
        if clinician is None or clinician.role is not Role.CLINICIAN:
            raise NotFound("no such clinician")
        assert clinician.clinic_id is not None
        if not access.can_edit_availability(by, clinician.id, clinician.clinic_id):
            raise PermissionDenied("only the clinician or a clinic admin sets availability")
        check_time_zone(av.time_zone)
        if not 5 <= av.slot_minutes <= 240:
            raise InvalidInput("slot_minutes must be 5..240", field="slot_minutes")
        for w in av.weekly:
            if not (0 <= w.weekday <= 6 and w.start < w.end):
                raise InvalidInput("weekly hours need weekday 0..6 and start < end", field="weekly")
        stored = replace(av, clinic_id=clinician.clinic_id, updated_at=self._clock())
        await self._store.put_availability(stored)
        return stored

    async def availability(self, clinician_id: str) -> Availability:
        av = await self._store.get_availability(clinician_id)
        if av is None:
            raise NotFound("this clinician has published no availability")
        return av

    async def free_slots(
        self, clinician_id: str, frm: datetime, to: datetime
    ) -> list[tuple[datetime, datetime]]:
        if to <= frm or to - frm > slots.MAX_RANGE:
            raise InvalidInput("the range must be positive and at most 62 days", field="to")
        av = await self.availability(clinician_id)
        busy = await self._store.list_sessions(
            SessionQuery(
                user_id=clinician_id,
                starts_from=frm - rules.MAX_DURATION,
                starts_before=to,
                limit=5000,
            )
        )
        intervals = [(s.start, s.end) for s in busy if rules.is_active(s)]
        return slots.free_slots(av, intervals, frm, to, self._clock())

    async def book_slot(
        self, by: Principal, clinician_id: str, start: datetime, title: str | None = None
    ) -> Session:
        """A patient books one of a clinician's free slots as a check-up."""
        if by.role is not Role.PATIENT:
            raise PermissionDenied("patients book slots")
        av = await self.availability(clinician_id)
        end = start + timedelta(minutes=av.slot_minutes)
        candidates = slots.candidate_slots(av, start, end)
        if (start, end) not in candidates:
            raise InvalidInput("not one of the clinician's slots", field="start")
        if start < self._clock():
            raise InvalidInput("this slot is in the past", field="start")
        clinic_as = Principal(clinician_id, Role.CLINICIAN, av.clinic_id)
        new = NewSession(
            SessionKind.CHECKUP,
            title or "Video check-up",
            start,
            end,
            av.time_zone,
            clinician_id=clinician_id,
            patient_id=by.subject,
            quality=av.quality,
        )
        base = await self._build(clinic_as, new)
        return await self._book(replace(base, created_by=by.subject), False, SESSION_CREATED)

    async def set_trusted_contacts(self, by: Principal, user_ids: Sequence[str]) -> tuple[str, ...]:
        """Whose calls a family member's TV may answer by itself."""
        if by.role not in (Role.FAMILY, Role.PATIENT):
            raise PermissionDenied("trusted contacts are for family members")
        contacts = tuple(dict.fromkeys(u for u in user_ids if u != by.subject))
        if len(contacts) > MAX_TRUSTED:
            raise InvalidInput(f"at most {MAX_TRUSTED} trusted contacts", field="user_ids")
        for uid in contacts:
            user = await self._user(uid, "user_ids")
            if user.role not in (Role.FAMILY, Role.PATIENT):
                raise InvalidInput("trusted contacts are family members", field="user_ids")
        await self._store.set_trusted_contacts(by.subject, contacts)
        return contacts

    async def set_site_capacity(
        self, by: Principal, site_id: str, name: str, capacity_kbps: int
    ) -> Site:
        if by.role is not Role.ADMIN or by.clinic_id != site_id:
            raise PermissionDenied("a clinic's admins set its capacity")
        if capacity_kbps < 100:
            raise InvalidInput("capacity must be at least 0.1 Mbit/s", field="capacity_mbps")
        site = Site(site_id, name, capacity_kbps)
        await self._store.put_site(site)
        return site
