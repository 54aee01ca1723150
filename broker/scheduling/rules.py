"""Pure scheduling rules: join windows, status changes, double booking and HD capacity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from broker.errors import Conflict, InvalidInput
from broker.scheduling.model import (
    PROFILES,
    QUALITY_ORDER,
    Session,
    SessionKind,
    SessionStatus,
)

DEFAULT_MAX = {SessionKind.CHECKUP: 3, SessionKind.FAMILY_CALL: 4}
MAX_PARTICIPANTS = 12
MAX_DURATION = timedelta(hours=8)
SUGGESTION_STEP = timedelta(minutes=15)
SUGGESTION_HORIZON = timedelta(days=7)
SUGGESTIONS = 3


class DoubleBooked(Conflict):
    code = "double_booked"


class CapacityExceeded(Conflict):
    code = "capacity_exceeded"


class OutsideJoinWindow(Conflict):
    code = "outside_join_window"


class BadTransition(Conflict):
    code = "invalid_status_change"


@dataclass(frozen=True, slots=True)
class JoinWindow:
    opens: datetime
    closes: datetime

    def contains(self, moment: datetime) -> bool:
        return self.opens <= moment < self.closes


def join_window(session: Session, before: timedelta, grace: timedelta) -> JoinWindow:
    return JoinWindow(session.start - before, session.end + grace)


def check_join_window(session: Session, window: JoinWindow, now: datetime) -> None:
    if session.status in (SessionStatus.CANCELLED, SessionStatus.NOSHOW, SessionStatus.FULFILLED):
        raise Conflict(
            f"session is {session.status.value}", code=f"session_{session.status.name.lower()}"
        )
    if not window.contains(now):
        raise OutsideJoinWindow(
            "outside the join window",
            opens_at=window.opens.isoformat(),
            closes_at=window.closes.isoformat(),
        )


_NEXT: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.BOOKED: frozenset(
        {
            SessionStatus.CHECKED_IN,
            SessionStatus.ARRIVED,
            SessionStatus.CANCELLED,
            SessionStatus.NOSHOW,
            SessionStatus.FULFILLED,
        }
    ),
    SessionStatus.CHECKED_IN: frozenset(
        {
            SessionStatus.ARRIVED,
            SessionStatus.CANCELLED,
            SessionStatus.NOSHOW,
            SessionStatus.FULFILLED,
            SessionStatus.BOOKED,
        }
    ),
    SessionStatus.ARRIVED: frozenset({SessionStatus.FULFILLED, SessionStatus.CANCELLED}),
}


def transition(session: Session, to: SessionStatus, now: datetime) -> Session:
    if to == session.status:
        return session
    if to not in _NEXT.get(session.status, frozenset()):
        raise BadTransition(f"cannot go from {session.status.value} to {to.value}")
    return replace(session, status=to, updated_at=now)


def validate_times(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("times need a UTC offset", field="start")
    if end <= start:
        raise InvalidInput("end must be after start", field="end")
    if end - start > MAX_DURATION:
        raise InvalidInput("a session lasts at most 8 hours", field="end")


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def is_active(session: Session) -> bool:
    return session.status not in (SessionStatus.CANCELLED, SessionStatus.NOSHOW)


def demand_kbps(session: Session) -> int:
    """Bandwidth a session takes from its site: one stream per participant at its profile."""
    return PROFILES[session.quality].kbps_per_stream * session.max_participants


def person_conflicts(candidate: Session, others: Iterable[Session]) -> list[str]:
    """Ids of people in ``candidate`` already in an overlapping, active session."""
    members = set(candidate.member_ids)
    clash: set[str] = set()
    for other in others:
        if other.id == candidate.id or not is_active(other):
            continue
        if overlaps(candidate.start, candidate.end, other.start, other.end):
            clash.update(members.intersection(other.member_ids))
    return sorted(clash)


def peak_load(
    start: datetime,
    end: datetime,
    site_id: str,
    others: Iterable[Session],
    exclude: str | None = None,
) -> int:
    """Highest total demand on ``site_id`` at any instant of [start, end)."""
    points: list[tuple[datetime, int]] = []
    for s in others:
        if s.id == exclude or s.site_id != site_id or not is_active(s):
            continue
        if overlaps(start, end, s.start, s.end):
            points.append((max(s.start, start), demand_kbps(s)))
            points.append((min(s.end, end), -demand_kbps(s)))
    points.sort(key=lambda p: (p[0], p[1]))  # ends before starts at the same instant
    load = peak = 0
    for _, delta in points:
        load += delta
        peak = max(peak, load)
    return peak


def fits(candidate: Session, others: Sequence[Session], capacity_kbps: int) -> bool:
    load = peak_load(candidate.start, candidate.end, candidate.site_id, others, candidate.id)
    return load + demand_kbps(candidate) <= capacity_kbps


def suggest_starts(
    candidate: Session, others: Sequence[Session], capacity_kbps: int, count: int = SUGGESTIONS
) -> list[datetime]:
    """Earliest start times after the requested one at which the session fits and nobody in
    it is busy: the moments other sessions end, and a 15-minute grid, one week ahead."""
    duration = candidate.end - candidate.start
    limit = candidate.start + SUGGESTION_HORIZON
    grid = int(SUGGESTION_HORIZON / SUGGESTION_STEP)
    times = {candidate.start + SUGGESTION_STEP * i for i in range(1, grid + 1)}
    times.update(s.end for s in others if candidate.start < s.end <= limit)
    found: list[datetime] = []
    for at in sorted(times):
        moved = replace(candidate, start=at, end=at + duration)
        if fits(moved, others, capacity_kbps) and not person_conflicts(moved, others):
            found.append(at)
            if len(found) == count:
                break
    return found


def admit_booking(
    candidate: Session, others: Sequence[Session], capacity_kbps: int | None, allow_downgrade: bool
) -> Session:
    """The booking rules: nobody double-booked, and the site's capacity is never exceeded.

    Returns the session to store (possibly at a lower quality when ``allow_downgrade``).
    ``others`` holds every active session that shares a person or the site with the
    candidate around its time.
    """
    clash = person_conflicts(candidate, others)
    if clash:
        raise DoubleBooked(
            "someone in this session is already booked at that time",
            user_ids=",".join(clash),
        )
    if capacity_kbps is None or fits(candidate, others, capacity_kbps):
        return candidate
    if allow_downgrade:
        below = QUALITY_ORDER[QUALITY_ORDER.index(candidate.quality) + 1 :]
        for quality in below:
            lower = replace(candidate, quality=quality)
            if fits(lower, others, capacity_kbps):
                return lower
    suggestions = suggest_starts(candidate, others, capacity_kbps)
    raise CapacityExceeded(
        "the site has no bandwidth left for this quality at that time",
        suggested_starts=",".join(s.isoformat() for s in suggestions),
    )
