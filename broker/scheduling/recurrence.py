"""A subset of RFC 5545 RRULE for recurring family calls: weekly, with INTERVAL, BYDAY and
COUNT or UNTIL. Occurrences keep their local wall-clock time across daylight-saving changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from broker.errors import InvalidInput

MAX_OCCURRENCES = 52
MAX_SPAN = timedelta(days=366)
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    interval: int = 1
    weekdays: tuple[int, ...] = ()  # 0 = Monday; empty: the start's weekday
    count: int | None = None
    until: date | None = None

    def text(self) -> str:
        parts = ["FREQ=WEEKLY"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.weekdays:
            parts.append("BYDAY=" + ",".join(_DAYS[d] for d in self.weekdays))
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={self.until.strftime('%Y%m%d')}")
        return ";".join(parts)


def parse(rule: str) -> WeeklyRule:
    fields: dict[str, str] = {}
    for part in rule.strip().removeprefix("RRULE:").split(";"):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise InvalidInput(f"bad RRULE part {part!r}", field="recurrence")
        fields[key.upper()] = value.upper()
    if fields.pop("FREQ", None) != "WEEKLY":
        raise InvalidInput("only FREQ=WEEKLY is supported", field="recurrence")
    try:
        interval = int(fields.pop("INTERVAL", "1"))
        count = int(fields["COUNT"]) if "COUNT" in fields else None
        fields.pop("COUNT", None)
        until_text = fields.pop("UNTIL", None)
        until = datetime.strptime(until_text[:8], "%Y%m%d").date() if until_text else None
        weekdays = (
            tuple(sorted({_DAYS.index(d) for d in fields.pop("BYDAY").split(",")}))
            if ("BYDAY" in fields)
            else ()
        )
    except ValueError:
        raise InvalidInput("bad RRULE value", field="recurrence") from None
    if fields:
        raise InvalidInput(f"unsupported RRULE parts: {', '.join(fields)}", field="recurrence")
    if not 1 <= interval <= 4:
        raise InvalidInput("INTERVAL must be 1..4", field="recurrence")
    if count is None and until is None:
        raise InvalidInput("give COUNT or UNTIL", field="recurrence")
    if count is not None and not 1 <= count <= MAX_OCCURRENCES:
        raise InvalidInput(f"COUNT must be 1..{MAX_OCCURRENCES}", field="recurrence")
    return WeeklyRule(interval, weekdays, count, until)


def occurrences(rule: WeeklyRule, start: datetime, zone_name: str) -> list[datetime]:
    """UTC start times of every occurrence, the first being ``start``."""
    zone = ZoneInfo(zone_name)
    local = start.astimezone(zone)
    days = rule.weekdays or (local.weekday(),)
    week0 = local.date() - timedelta(days=local.weekday())
    out: list[datetime] = []
    week = 0
    limit = rule.count or MAX_OCCURRENCES
    while len(out) < limit:
        monday = week0 + timedelta(weeks=week * rule.interval)
        if monday - local.date() > MAX_SPAN:
            break
        for d in days:
            day = monday + timedelta(days=d)
            if day < local.date() or len(out) >= limit:
                continue
            if rule.until is not None and day > rule.until:
                return out
            at = datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=zone)
            out.append(at.astimezone(ZoneInfo("UTC")))
        week += 1
    return out
