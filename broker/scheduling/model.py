"""Value types of scheduling: sessions, participants, availability, invites, events, audit.

Pure data; times are aware UTC datetimes; the IANA zone a session was booked in is kept so
calendars show it in local time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, time


class SessionKind(enum.StrEnum):
    CHECKUP = "checkup"
    FAMILY_CALL = "family_call"


class SessionStatus(enum.StrEnum):
    """Follows FHIR Appointment.status."""

    BOOKED = "booked"
    CHECKED_IN = "checked-in"  # someone is in the waiting room
    ARRIVED = "arrived"  # admitted, call in progress
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"

    @property
    def is_final(self) -> bool:
        return self in (SessionStatus.FULFILLED, SessionStatus.CANCELLED, SessionStatus.NOSHOW)


class ParticipantRole(enum.StrEnum):
    HOST = "host"  # the clinician of a check-up; the organiser of a family call
    PATIENT = "patient"
    FAMILY = "family"
    INTERPRETER = "interpreter"
    GUEST = "guest"

    @property
    def waits(self) -> bool:
        """Who waits in a check-up's waiting room until a host admits them."""
        return self is not ParticipantRole.HOST


class Quality(enum.StrEnum):
    SD = "sd"
    HD = "hd"
    FULLHD = "fullhd"


@dataclass(frozen=True, slots=True)
class QualityProfile:
    name: Quality
    width: int
    height: int
    frame_rate: int
    kbps_per_stream: int


PROFILES: dict[Quality, QualityProfile] = {
    Quality.SD: QualityProfile(Quality.SD, 640, 360, 30, 800),
    Quality.HD: QualityProfile(Quality.HD, 1280, 720, 30, 2500),
    Quality.FULLHD: QualityProfile(Quality.FULLHD, 1920, 1080, 30, 4500),
}
QUALITY_ORDER = (Quality.FULLHD, Quality.HD, Quality.SD)


@dataclass(frozen=True, slots=True)
class Participant:
    user_id: str  # a user id, or an invite id for guests
    role: ParticipantRole
    display_name: str | None = None  # guests only; users' names live on the account


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    kind: SessionKind
    title: str
    start: datetime
    end: datetime
    time_zone: str
    status: SessionStatus
    quality: Quality
    max_participants: int
    participants: tuple[Participant, ...]
    created_by: str
    created_at: datetime
    updated_at: datetime
    site_id: str  # capacity site: the clinic, or a neighbourhood network for home calls
    clinic_id: str | None = None
    sequence: int = 0  # iCalendar SEQUENCE, bumped on reschedule and cancel
    series_id: str | None = None  # recurring family calls share one
    notes: str | None = None  # never logged, never in events

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(p.user_id for p in self.participants if p.role is ParticipantRole.HOST)

    @property
    def member_ids(self) -> tuple[str, ...]:
        return tuple(p.user_id for p in self.participants)

    def role_of(self, user_id: str) -> ParticipantRole | None:
        for p in self.participants:
            if p.user_id == user_id:
                return p.role
        return None


@dataclass(frozen=True, slots=True)
class WeeklyHours:
    """One weekly recurring block of availability, in the clinician's local time."""

    weekday: int  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class AvailabilityException:
    """A local date range the clinician is away (``available=False``) or extra hours."""

    day: date
    start: time | None = None  # None: the whole day
    end: time | None = None
    available: bool = False


@dataclass(frozen=True, slots=True)
class Availability:
    clinician_id: str
    clinic_id: str
    time_zone: str
    slot_minutes: int
    weekly: tuple[WeeklyHours, ...]
    exceptions: tuple[AvailabilityException, ...] = ()
    quality: Quality = Quality.HD
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Invite:
    """A guest link: only the SHA-256 of its secret is stored."""

    id: str
    session_id: str
    token_hash: str
    role: ParticipantRole
    display_name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_uses: int
    uses: int = 0
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    capacity_kbps: int


@dataclass(frozen=True, slots=True)
class Event:
    """A webhook event: ids and times only, never personal data."""

    id: str
    type: str
    session_id: str
    clinic_id: str | None
    occurred_at: datetime
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    session_id: str
    at: datetime
    action: str  # joined, admitted, denied, left, removed, ended, ...
    actor_id: str | None
    subject_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    clinic_id: str
    url: str
    secret: str  # HMAC key; returned once at creation
    created_at: datetime
    event_types: tuple[str, ...] = ()  # empty: all
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one endpoint in the durable outbox."""

    id: str
    endpoint_id: str
    event: Event
    seq: int  # order within (endpoint, session)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_error: str | None = None
