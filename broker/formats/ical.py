"""RFC 5545 views of scheduling: one session's invitation, and a user's calendar feed.

Pure functions returning ``text/calendar`` bytes; the clock is a parameter. Times are written
as local wall-clock times in the session's IANA zone (``DTSTART;TZID=Europe/Berlin:...``), with
a VTIMEZONE for each zone used, so a 09:00 visit stays at 09:00 in every client across a
daylight-saving change. Sessions booked in UTC are written in UTC (``...Z``) and need none.

Names: the event DESCRIPTION names the hosts only (clinicians, or a family call's organiser),
never patients. An invitation (:func:`session_event`) goes to the participants themselves, so
it may carry ORGANIZER and, when asked, ATTENDEE names and e-mail addresses; the feed, which
calendar services fetch on the user's behalf, never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from broker.domain import User
from broker.scheduling.model import ParticipantRole, Session, SessionKind, SessionStatus

Method = Literal["PUBLISH", "REQUEST", "CANCEL"]

MIME_TYPE = "text/calendar; charset=utf-8"
PRODID = "-//CityCall//CityCall broker//EN"
UID_DOMAIN = "citycall"
FEED_NAME = "CityCall"
FEED_REFRESH = timedelta(hours=1)

_KIND = {SessionKind.CHECKUP: "Video check-up", SessionKind.FAMILY_CALL: "Family video call"}
_ATTENDEE_ROLE = {
    ParticipantRole.HOST: "CHAIR",
    ParticipantRole.PATIENT: "REQ-PARTICIPANT",
    ParticipantRole.INTERPRETER: "REQ-PARTICIPANT",
    ParticipantRole.FAMILY: "OPT-PARTICIPANT",
    ParticipantRole.GUEST: "OPT-PARTICIPANT",
}


def uid(session_id: str) -> str:
    """The stable iCalendar UID of a session: the same in every invitation and in feeds."""
    return f"{session_id}@{UID_DOMAIN}"


def join_url(base_url: str, session_id: str) -> str:
    """The default link to join a session in the web client."""
    return f"{base_url.rstrip('/')}/?session={quote(session_id, safe='')}"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC)


def _local(moment: datetime, zone: str) -> datetime:
    """Wall-clock time in ``zone``; icalendar writes UTC zones as ``...Z`` without VTIMEZONE."""
    return _utc(moment).astimezone(ZoneInfo(zone))


def _description(session: Session, people: Mapping[str, User], video_url: str) -> str:
    hosts = [people[h].display_name for h in session.hosts if h in people]
    heading = _KIND[session.kind] + (f" with {', '.join(hosts)}" if hosts else "")
    return f"{heading}\n\nJoin the video call: {video_url}"


def _event(
    session: Session,
    people: Mapping[str, User],
    video_url: str,
    now: datetime,
    status: str | None,
) -> Event:
    event = Event()
    event.add("uid", uid(session.id))
    event.add("dtstamp", _utc(now))
    event.add("dtstart", _local(session.start, session.time_zone))
    event.add("dtend", _local(session.end, session.time_zone))
    event.add("sequence", session.sequence)
    event.add("summary", session.title)
    if status is not None:
        event.add("status", status)
    event.add("description", _description(session, people, video_url))
    event.add("location", video_url)
    event.add("url", video_url)
    event.add(
        "conference",  # RFC 7986
        video_url,
        parameters={"VALUE": "URI", "FEATURE": "AUDIO,VIDEO", "LABEL": "CityCall video call"},
    )
    if session.kind is SessionKind.CHECKUP:
        event.add("class", "PRIVATE")
    event.add("created", _utc(session.created_at))
    event.add("last-modified", _utc(session.updated_at))
    return event


def _calendar(method: Method) -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    return cal


def _add_timezones(cal: Calendar, sessions: Iterable[Session]) -> None:
    """One VTIMEZONE per zone used, covering the whole years the sessions fall in."""
    years = [
        _utc(moment).astimezone(ZoneInfo(s.time_zone)).year
        for s in sessions
        for moment in (s.start, s.end)
    ]
    if years:
        cal.add_missing_timezones(
            first_date=date(min(years), 1, 1), last_date=date(max(years) + 1, 1, 1)
        )


def _organizer(email: str, people: Mapping[str, User]) -> tuple[str, dict[str, str]]:
    params: dict[str, str] = {}
    for person in people.values():
        if person.email.casefold() == email.casefold():
            params["CN"] = person.display_name
            break
    return f"mailto:{email}", params


def session_event(
    session: Session,
    people: Mapping[str, User],
    organizer_email: str | None,
    base_url: str,
    video_url: str | None = None,
    method: Method | None = None,
    *,
    now: datetime,
    attendees: bool = False,
) -> bytes:
    """One session as an iTIP invitation (RFC 5545/5546).

    ``method`` defaults to CANCEL for a cancelled session and REQUEST otherwise. A CANCEL for a
    session that is not cancelled is an "uninvite" of the recipient and carries no STATUS.
    ``video_url`` defaults to :func:`join_url`. ``attendees`` adds an ATTENDEE (name and
    e-mail) for every participant found in ``people``; guests have no account and no address.
    iTIP wants an ORGANIZER and at least one ATTENDEE in REQUEST and CANCEL messages sent by
    e-mail; a plain download works without.
    """
    cancelled = session.status is SessionStatus.CANCELLED
    method = method or ("CANCEL" if cancelled else "REQUEST")
    if method == "REQUEST" and cancelled:
        raise ValueError("a cancelled session is sent as CANCEL, not REQUEST")
    if cancelled:
        status: str | None = "CANCELLED"
    elif method == "CANCEL":
        status = None
    else:
        status = "CONFIRMED"

    link = video_url or join_url(base_url, session.id)
    event = _event(session, people, link, now, status)
    if organizer_email:
        address, params = _organizer(organizer_email, people)
        event.add("organizer", address, parameters=params)
    if attendees:
        for p in session.participants:
            person = people.get(p.user_id)
            if person is None:
                continue
            event.add(
                "attendee",
                f"mailto:{person.email}",
                parameters={
                    "CN": person.display_name,
                    "CUTYPE": "INDIVIDUAL",
                    "ROLE": _ATTENDEE_ROLE[p.role],
                    "PARTSTAT": "ACCEPTED",
                    "RSVP": "FALSE",
                },
            )

    cal = _calendar(method)
    cal.add_component(event)
    _add_timezones(cal, [session])
    data: bytes = cal.to_ical()
    return data


def feed(
    sessions: Iterable[Session],
    people: Mapping[str, User],
    zone_name: str,
    base_url: str,
    now: datetime,
    *,
    video_url: Callable[[Session], str] | None = None,
) -> bytes:
    """A user's sessions as one subscribable calendar (METHOD:PUBLISH).

    Cancelled sessions stay in the feed with STATUS:CANCELLED, so subscribed clients remove
    them. ``zone_name`` is the user's zone (X-WR-TIMEZONE, for clients that display in one);
    each event keeps its own zone. ``video_url`` defaults to :func:`join_url`.
    """
    ZoneInfo(zone_name)  # refuse unknown zones before writing anything
    ordered = sorted(sessions, key=lambda s: (s.start, s.id))
    cal = _calendar("PUBLISH")
    cal.add("name", FEED_NAME)  # RFC 7986
    cal.add("x-wr-calname", FEED_NAME)
    cal.add("x-wr-timezone", zone_name)
    cal.add("refresh-interval", FEED_REFRESH, parameters={"VALUE": "DURATION"})
    minutes = int(FEED_REFRESH.total_seconds()) // 60
    cal.add("x-published-ttl", f"PT{minutes}M")  # the same, for older clients
    for s in ordered:
        link = video_url(s) if video_url is not None else join_url(base_url, s.id)
        status = "CANCELLED" if s.status is SessionStatus.CANCELLED else "CONFIRMED"
        cal.add_component(_event(s, people, link, now, status))
    _add_timezones(cal, ordered)
    data: bytes = cal.to_ical()
    return data
