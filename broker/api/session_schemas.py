"""Request and response bodies of the scheduling routes (msgspec Structs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from broker.scheduling.joining import JoinGrant
from broker.scheduling.model import (
    AuditEntry,
    Availability,
    Invite,
    Session,
)

Instant = Annotated[datetime, msgspec.Meta(tz=True, examples=["2026-12-01T09:00:00+01:00"])]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Europe/Berlin"])]
LocalTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:00"])]
Day = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-12-24"])]
QualityName = Literal["sd", "hd", "fullhd"]


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SessionCreate(_In, frozen=True, kw_only=True):
    kind: Literal["checkup", "family_call"]
    title: Title
    start: Instant
    end: Instant
    time_zone: Zone = "UTC"
    clinician_id: Id | None = None
    patient_id: Id | None = None
    participant_ids: Annotated[list[Id], msgspec.Meta(max_length=11)] = []
    quality: QualityName = "hd"
    max_participants: Annotated[int, msgspec.Meta(ge=2, le=12)] | None = None
    allow_downgrade: bool = False
    recurrence: (
        Annotated[str, msgspec.Meta(max_length=200, examples=["FREQ=WEEKLY;BYDAY=SU;COUNT=8"])]
        | None
    ) = None
    site_id: Id | None = None
    notes: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class Reschedule(_In, frozen=True, kw_only=True):
    start: Instant
    end: Instant
    allow_downgrade: bool = False


class Cancel(_In, frozen=True, kw_only=True):
    reason: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class InviteCreate(_In, frozen=True, kw_only=True):
    role: Literal["interpreter", "guest", "family"]
    display_name: Title
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] | None = None
    max_uses: Annotated[int, msgspec.Meta(ge=1, le=3)] = 1


class Redeem(_In, frozen=True, kw_only=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class WeeklyIn(_In, frozen=True, kw_only=True):
    weekday: Annotated[int, msgspec.Meta(ge=0, le=6)]
    start: LocalTime
    end: LocalTime


class ExceptionIn(_In, frozen=True, kw_only=True):
    day: Day
    start: LocalTime | None = None
    end: LocalTime | None = None
    available: bool = False


class AvailabilityIn(_In, frozen=True, kw_only=True):
    time_zone: Zone
    slot_minutes: Annotated[int, msgspec.Meta(ge=5, le=240)] = 20
    weekly: Annotated[list[WeeklyIn], msgspec.Meta(max_length=50)]
    exceptions: Annotated[list[ExceptionIn], msgspec.Meta(max_length=400)] = []
    quality: QualityName = "hd"


class SlotBooking(_In, frozen=True, kw_only=True):
    clinician_id: Id
    start: Instant
    title: Title | None = None


class Capacity(_In, frozen=True, kw_only=True):
    capacity_mbps: Annotated[float, msgspec.Meta(ge=0.1, le=100000)]
    name: Title | None = None


class ParticipantOut(_Out, frozen=True, kw_only=True):
    user_id: str
    role: str
    display_name: str | None


class ProfileOut(_Out, frozen=True, kw_only=True):
    name: str
    width: int
    height: int
    frame_rate: int
    max_kbps: int


class SessionOut(_Out, frozen=True, kw_only=True):
    id: str
    kind: str
    title: str
    start: datetime
    end: datetime
    time_zone: str
    status: str
    quality: ProfileOut
    max_participants: int
    participants: list[ParticipantOut]
    clinic_id: str | None
    site_id: str
    sequence: int
    series_id: str | None
    join_opens_at: datetime
    join_closes_at: datetime
    created_at: datetime
    updated_at: datetime
    notes: str | None = None

    @classmethod
    def of(
        cls, s: Session, names: dict[str, str], opens: datetime, closes: datetime, show_notes: bool
    ) -> SessionOut:
        from broker.scheduling.model import PROFILES

        p = PROFILES[s.quality]
        return cls(
            id=s.id,
            kind=s.kind.value,
            title=s.title,
            start=s.start,
            end=s.end,
            time_zone=s.time_zone,
            status=s.status.value,
            quality=ProfileOut(
                name=p.name.value,
                width=p.width,
                height=p.height,
                frame_rate=p.frame_rate,
                max_kbps=p.kbps_per_stream,
            ),
            max_participants=s.max_participants,
            participants=[
                ParticipantOut(
                    user_id=x.user_id,
                    role=x.role.value,
                    display_name=x.display_name or names.get(x.user_id),
                )
                for x in s.participants
            ],
            clinic_id=s.clinic_id,
            site_id=s.site_id,
            sequence=s.sequence,
            series_id=s.series_id,
            join_opens_at=opens,
            join_closes_at=closes,
            created_at=s.created_at,
            updated_at=s.updated_at,
            notes=s.notes if show_notes else None,
        )


class SessionList(_Out, frozen=True, kw_only=True):
    items: list[SessionOut]


class IceServer(_Out, frozen=True, kw_only=True):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class JoinOut(_Out, frozen=True, kw_only=True):
    join_token: str
    expires_at: int
    session_id: str
    role: str
    signaling_url: str
    ice_servers: list[IceServer]
    quality: ProfileOut
    join_opens_at: datetime
    join_closes_at: datetime

    @classmethod
    def of(cls, g: JoinGrant, signaling_url: str, ice: list[IceServer]) -> JoinOut:
        p = g.profile
        return cls(
            join_token=g.token,
            expires_at=g.expires_at,
            session_id=g.session.id,
            role=g.role.value,
            signaling_url=signaling_url,
            ice_servers=ice,
            quality=ProfileOut(
                name=p.name.value,
                width=p.width,
                height=p.height,
                frame_rate=p.frame_rate,
                max_kbps=p.kbps_per_stream,
            ),
            join_opens_at=g.window.opens,
            join_closes_at=g.window.closes,
        )


class InviteOut(_Out, frozen=True, kw_only=True):
    id: str
    session_id: str
    role: str
    display_name: str
    expires_at: datetime
    max_uses: int
    uses: int
    revoked_at: datetime | None

    @classmethod
    def of(cls, i: Invite) -> InviteOut:
        return cls(
            id=i.id,
            session_id=i.session_id,
            role=i.role.value,
            display_name=i.display_name,
            expires_at=i.expires_at,
            max_uses=i.max_uses,
            uses=i.uses,
            revoked_at=i.revoked_at,
        )


class InviteCreated(_Out, frozen=True, kw_only=True):
    invite: InviteOut
    token: str
    url: str


class InviteList(_Out, frozen=True, kw_only=True):
    items: list[InviteOut]


class AuditOut(_Out, frozen=True, kw_only=True):
    at: datetime
    action: str
    actor_id: str | None
    subject_id: str | None
    reason: str | None

    @classmethod
    def of(cls, a: AuditEntry) -> AuditOut:
        return cls(
            at=a.at, action=a.action, actor_id=a.actor_id, subject_id=a.subject_id, reason=a.reason
        )


class AuditList(_Out, frozen=True, kw_only=True):
    items: list[AuditOut]


class WeeklyOut(_Out, frozen=True, kw_only=True):
    weekday: int
    start: str
    end: str


class AvailabilityOut(_Out, frozen=True, kw_only=True):
    clinician_id: str
    clinic_id: str
    time_zone: str
    slot_minutes: int
    weekly: list[WeeklyOut]
    quality: str

    @classmethod
    def of(cls, a: Availability) -> AvailabilityOut:
        return cls(
            clinician_id=a.clinician_id,
            clinic_id=a.clinic_id,
            time_zone=a.time_zone,
            slot_minutes=a.slot_minutes,
            weekly=[
                WeeklyOut(
                    weekday=w.weekday, start=w.start.strftime("%H:%M"), end=w.end.strftime("%H:%M")
                )
                for w in a.weekly
            ],
            quality=a.quality.value,
        )


class SlotOut(_Out, frozen=True, kw_only=True):
    start: datetime
    end: datetime


class SlotList(_Out, frozen=True, kw_only=True):
    clinician_id: str
    items: list[SlotOut]


class CapacityOut(_Out, frozen=True, kw_only=True):
    site_id: str
    name: str
    capacity_mbps: float


class TrustedContacts(_In, frozen=True, kw_only=True):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=50)]


class TrustedContactsOut(_Out, frozen=True, kw_only=True):
    user_ids: list[str]


class FeedOut(_Out, frozen=True, kw_only=True):
    url: str
