"""iCalendar views: output parses cleanly, and local times survive daylight-saving changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Component, Event, Timezone

from broker.domain import Role, User
from broker.formats import ical
from broker.scheduling.model import (
    Participant,
    ParticipantRole,
    Quality,
    Session,
    SessionKind,
    SessionStatus,
)

BASE = "https://broker.example"
VIDEO = "https://broker.example/?session=ses_1"
NOW = datetime(2026, 10, 1, 12, 0, 5, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# 09:00 in Berlin: CEST (UTC+2) on 22 October 2026, CET (UTC+1) after 25 October.
OCT22 = datetime(2026, 10, 22, 7, 0, tzinfo=UTC)
OCT29 = datetime(2026, 10, 29, 8, 0, tzinfo=UTC)


def user(uid: str, name: str, role: Role) -> User:
    return User(
        id=uid,
        email=f"{uid}@mail.example",
        display_name=name,
        role=role,
        password_hash="x",
        created_at=NOW,
        updated_at=NOW,
    )


PEOPLE = {
    u.id: u
    for u in (
        user("usr_doc", "Dr Ada Lovelace", Role.CLINICIAN),
        user("usr_pat", "Pat Patient", Role.PATIENT),
        user("usr_fam", "Fay Family, Jr.", Role.FAMILY),
    )
}


def session(
    start: datetime = OCT22,
    zone: str = "Europe/Berlin",
    sid: str = "ses_1",
    status: SessionStatus = SessionStatus.BOOKED,
) -> Session:
    return Session(
        id=sid,
        kind=SessionKind.CHECKUP,
        title="Blood pressure review",
        start=start,
        end=start + timedelta(minutes=20),
        time_zone=zone,
        status=status,
        quality=Quality.HD,
        max_participants=4,
        participants=(
            Participant("usr_doc", ParticipantRole.HOST),
            Participant("usr_pat", ParticipantRole.PATIENT),
            Participant("usr_fam", ParticipantRole.FAMILY),
            Participant("inv_guest", ParticipantRole.GUEST, display_name="Gus Guest"),
        ),
        created_by="usr_doc",
        created_at=NOW - timedelta(days=1),
        updated_at=NOW,
        site_id="cln_1",
        clinic_id="cln_1",
        sequence=0,
        notes="private clinical note",
    )


def parse(data: bytes) -> Calendar:
    assert isinstance(data, bytes)
    cal = Calendar.from_ical(data)
    assert isinstance(cal, Calendar)
    for component in cal.walk():
        assert component.errors == [], (component.name, component.errors)
    return cal


def only_event(cal: Calendar) -> Event:
    (event,) = cal.walk("VEVENT")
    assert isinstance(event, Event)
    return event


def zones(cal: Calendar) -> dict[str, Timezone]:
    return {str(tz["TZID"]): tz for tz in cal.walk("VTIMEZONE") if isinstance(tz, Timezone)}


def has_standard_and_daylight(tz: Component) -> bool:
    names = {sub.name for sub in tz.subcomponents}
    return names == {"STANDARD", "DAYLIGHT"}


def invite(s: Session, method: ical.Method | None = None) -> Calendar:
    organizer = "clinic@mail.example"
    return parse(ical.session_event(s, PEOPLE, organizer, BASE, VIDEO, method, now=NOW))


# --- one session -------------------------------------------------------------------------


def test_invitation_headers_and_identity() -> None:
    cal = invite(session())
    assert str(cal["PRODID"]) == ical.PRODID
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["METHOD"]) == "REQUEST"
    event = only_event(cal)
    assert str(event["UID"]) == "ses_1@citycall"
    assert event.decoded("DTSTAMP") == NOW
    assert event["DTSTAMP"].to_ical() == b"20261001T120005Z"
    assert event.decoded("SEQUENCE") == 0
    assert str(event["SUMMARY"]) == "Blood pressure review"
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["LOCATION"]) == VIDEO
    assert str(event["URL"]) == VIDEO
    assert VIDEO in str(event["DESCRIPTION"])
    assert str(event["CLASS"]) == "PRIVATE"


def test_description_names_hosts_not_patients_and_no_notes() -> None:
    data = ical.session_event(session(), PEOPLE, None, BASE, VIDEO, now=NOW)
    description = str(only_event(parse(data))["DESCRIPTION"])
    assert description.startswith("Video check-up with Dr Ada Lovelace")
    assert b"Pat Patient" not in data
    assert b"private clinical note" not in data
    assert b"mailto:" not in data  # no organizer given, no attendees asked for


def test_local_times_with_vtimezone() -> None:
    data = ical.session_event(session(), PEOPLE, None, BASE, VIDEO, now=NOW)
    assert b"DTSTART;TZID=Europe/Berlin:20261022T090000" in data
    assert b"DTEND;TZID=Europe/Berlin:20261022T092000" in data
    cal = parse(data)
    (tz,) = zones(cal).values()
    assert str(tz["TZID"]) == "Europe/Berlin"
    assert has_standard_and_daylight(tz)
    event = only_event(cal)
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event.decoded("DTSTART") == OCT22
    assert event.decoded("DTEND") == OCT22 + timedelta(minutes=20)


def test_reschedule_keeps_uid_and_bumps_sequence() -> None:
    first = only_event(invite(session()))
    moved = replace(session(start=OCT29), sequence=1, updated_at=NOW + timedelta(hours=1))
    second = only_event(invite(moved))
    assert str(second["UID"]) == str(first["UID"])
    assert second.decoded("SEQUENCE") == first.decoded("SEQUENCE") + 1
    assert second.decoded("DTSTART") == OCT29


def test_cancelled_session_is_a_cancel() -> None:
    cancelled = replace(session(), status=SessionStatus.CANCELLED, sequence=2)
    cal = invite(cancelled)
    assert str(cal["METHOD"]) == "CANCEL"
    event = only_event(cal)
    assert str(event["STATUS"]) == "CANCELLED"
    assert event.decoded("SEQUENCE") == 2
    assert str(event["UID"]) == "ses_1@citycall"
    with pytest.raises(ValueError):
        ical.session_event(cancelled, PEOPLE, None, BASE, VIDEO, "REQUEST", now=NOW)


def test_uninvite_is_a_cancel_without_status() -> None:
    cal = invite(session(), "CANCEL")
    assert str(cal["METHOD"]) == "CANCEL"
    assert "STATUS" not in only_event(cal)


def test_organizer_and_attendees() -> None:
    organizer = PEOPLE["usr_doc"].email
    data = ical.session_event(session(), PEOPLE, organizer, BASE, VIDEO, now=NOW, attendees=True)
    event = only_event(parse(data))
    assert str(event["ORGANIZER"]) == f"mailto:{organizer}"
    assert event["ORGANIZER"].params["CN"] == "Dr Ada Lovelace"
    attendees = event["ATTENDEE"]
    by_address = {str(a): a.params for a in attendees}
    assert set(by_address) == {f"mailto:{u.email}" for u in PEOPLE.values()}  # no guest
    assert by_address["mailto:usr_doc@mail.example"]["ROLE"] == "CHAIR"
    assert by_address["mailto:usr_pat@mail.example"]["ROLE"] == "REQ-PARTICIPANT"
    assert by_address["mailto:usr_fam@mail.example"]["CN"] == "Fay Family, Jr."
    assert by_address["mailto:usr_fam@mail.example"]["ROLE"] == "OPT-PARTICIPANT"


def test_unknown_organizer_has_no_name() -> None:
    cal = invite(session())
    assert str(only_event(cal)["ORGANIZER"]) == "mailto:clinic@mail.example"
    assert "CN" not in only_event(cal)["ORGANIZER"].params


def test_default_video_link() -> None:
    data = ical.session_event(session(sid="ses_a/b"), PEOPLE, None, BASE + "/", now=NOW)
    assert str(only_event(parse(data))["URL"]) == "https://broker.example/?session=ses_a%2Fb"
    assert ical.join_url(BASE, "ses_1") == "https://broker.example/?session=ses_1"


def test_utc_session_needs_no_vtimezone() -> None:
    data = ical.session_event(session(zone="UTC"), PEOPLE, None, BASE, VIDEO, now=NOW)
    assert b"DTSTART:20261022T070000Z" in data
    assert zones(parse(data)) == {}


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError):
        ical.session_event(session(), PEOPLE, None, BASE, VIDEO, now=datetime(2026, 1, 1))


# --- daylight-saving changes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "start", "local"),
    [
        # Berlin leaves summer time on 25 October 2026.
        ("Europe/Berlin", OCT22, "20261022T090000"),  # CEST, 07:00Z
        ("Europe/Berlin", OCT29, "20261029T090000"),  # CET, 08:00Z
        # New York leaves summer time on 1 November 2026, a week later.
        ("America/New_York", datetime(2026, 10, 29, 14, 0, tzinfo=UTC), "20261029T100000"),
        ("America/New_York", datetime(2026, 11, 5, 15, 0, tzinfo=UTC), "20261105T100000"),
    ],
)
def test_weekly_local_time_across_dst(zone: str, start: datetime, local: str) -> None:
    data = ical.session_event(session(start, zone), PEOPLE, None, BASE, VIDEO, now=NOW)
    assert f"DTSTART;TZID={zone}:{local}".encode() in data
    cal = parse(data)
    event = only_event(cal)
    assert event["DTSTART"].params["TZID"] == zone
    assert event.decoded("DTSTART") == start
    assert event.decoded("DTSTART").astimezone(ZoneInfo(zone)).hour in (9, 10)
    # The VTIMEZONE alone (not the tz database) maps the local time back to the same instant.
    tz = zones(cal)[zone]
    assert has_standard_and_daylight(tz)
    own = tz.to_tz(lookup_tzid=False)
    naive = datetime.strptime(local, "%Y%m%dT%H%M%S")
    assert naive.replace(tzinfo=own).astimezone(UTC) == start


# --- feed --------------------------------------------------------------------------------


def feed_sessions() -> list[Session]:
    return [
        session(OCT29, sid="ses_b"),
        session(OCT22, sid="ses_a"),
        session(datetime(2026, 10, 29, 14, 0, tzinfo=UTC), "America/New_York", "ses_c"),
        session(datetime(2026, 11, 5, 15, 0, tzinfo=UTC), "America/New_York", "ses_d"),
        session(OCT22 + timedelta(days=21), sid="ses_x", status=SessionStatus.CANCELLED),
    ]


def test_feed() -> None:
    data = ical.feed(feed_sessions(), PEOPLE, "Europe/Berlin", BASE, NOW)
    cal = parse(data)
    assert str(cal["METHOD"]) == "PUBLISH"
    assert str(cal["X-WR-CALNAME"]) == "CityCall"
    assert str(cal["X-WR-TIMEZONE"]) == "Europe/Berlin"
    assert cal.decoded("REFRESH-INTERVAL") == timedelta(hours=1)
    tzs = zones(cal)
    assert set(tzs) == {"Europe/Berlin", "America/New_York"}
    assert all(has_standard_and_daylight(tz) for tz in tzs.values())
    events = cal.walk("VEVENT")
    assert [str(e["UID"]) for e in events] == [
        "ses_a@citycall",
        "ses_b@citycall",
        "ses_c@citycall",
        "ses_d@citycall",
        "ses_x@citycall",
    ]
    assert [e["DTSTART"].to_ical() for e in events[:4]] == [
        b"20261022T090000",
        b"20261029T090000",
        b"20261029T100000",
        b"20261105T100000",
    ]
    assert [str(e["STATUS"]) for e in events] == ["CONFIRMED"] * 4 + ["CANCELLED"]
    assert all(e.decoded("DTSTAMP") == NOW for e in events)
    assert str(events[0]["URL"]) == "https://broker.example/?session=ses_a"
    # Calendar services fetch feeds: no addresses, no patient names, no notes.
    assert b"mailto:" not in data
    assert b"mail.example" not in data
    assert b"Pat Patient" not in data
    assert b"private clinical note" not in data


def test_feed_custom_links_and_empty_feed() -> None:
    data = ical.feed(
        feed_sessions()[:1], {}, "UTC", BASE, NOW, video_url=lambda s: f"https://v.example/{s.id}"
    )
    event = only_event(parse(data))
    assert str(event["URL"]) == "https://v.example/ses_b"
    assert str(event["DESCRIPTION"]).startswith("Video check-up\n")  # hosts unknown

    empty = parse(ical.feed([], PEOPLE, "Europe/Berlin", BASE, NOW))
    assert empty.walk("VEVENT") == []
    assert zones(empty) == {}


def test_feed_refuses_unknown_zone() -> None:
    with pytest.raises(Exception, match="Mars"):
        ical.feed([], PEOPLE, "Mars/Olympus", BASE, NOW)
