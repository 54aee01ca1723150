"""Pure slot arithmetic: a clinician's free slots from weekly hours, exceptions and bookings.

Working hours are local wall-clock times in the clinician's zone, so a 09:00 slot stays at
09:00 across a daylight-saving change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from broker.scheduling.model import Availability
from broker.scheduling.rules import overlaps

MAX_RANGE = timedelta(days=62)

Interval = tuple[datetime, datetime]


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(ZoneInfo("UTC"))


def _blocks(av: Availability, day: date, zone: ZoneInfo) -> Iterator[Interval]:
    """Open intervals of one local day: weekly hours minus absences, plus extra hours."""
    exceptions = [e for e in av.exceptions if e.day == day]
    if any(not e.available and e.start is None for e in exceptions):
        blocks: list[Interval] = []
    else:
        blocks = [
            (local_to_utc(day, w.start, zone), local_to_utc(day, w.end, zone))
            for w in av.weekly
            if w.weekday == day.weekday()
        ]
    for e in exceptions:
        if e.available and e.start is not None and e.end is not None:
            blocks.append((local_to_utc(day, e.start, zone), local_to_utc(day, e.end, zone)))
    away = [
        (local_to_utc(day, e.start, zone), local_to_utc(day, e.end, zone))
        for e in exceptions
        if not e.available and e.start is not None and e.end is not None
    ]
    for start, end in blocks:
        yield from _subtract((start, end), away)


def _subtract(block: Interval, holes: Iterable[Interval]) -> list[Interval]:
    pieces = [block]
    for h_start, h_end in holes:
        nxt = []
        for start, end in pieces:
            if not overlaps(start, end, h_start, h_end):
                nxt.append((start, end))
                continue
            if start < h_start:
                nxt.append((start, h_start))
            if h_end < end:
                nxt.append((h_end, end))
        pieces = nxt
    return pieces


def candidate_slots(av: Availability, frm: datetime, to: datetime) -> list[Interval]:
    """Every slot of the clinician's hours in [frm, to), free or not."""
    zone = ZoneInfo(av.time_zone)
    step = timedelta(minutes=av.slot_minutes)
    out: list[Interval] = []
    day = frm.astimezone(zone).date() - timedelta(days=1)
    last = to.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        for start, end in _blocks(av, day, zone):
            at = start
            while at + step <= end:
                if frm <= at and at + step <= to:
                    out.append((at, at + step))
                at += step
        day += timedelta(days=1)
    return sorted(set(out))


def free_slots(
    av: Availability, busy: Iterable[Interval], frm: datetime, to: datetime, now: datetime
) -> list[Interval]:
    taken = list(busy)
    return [
        (s, e)
        for s, e in candidate_slots(av, max(frm, now), to)
        if not any(overlaps(s, e, b_start, b_end) for b_start, b_end in taken)
    ]
