"""``--demo``: a clinic with an admin and a clinician, a patient and two family members,
the clinician's availability, two check-ups and a family call starting soon.

Seeding is idempotent: accounts are looked up by e-mail and made only when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time, timedelta

from broker.accounts import Accounts, NewUser
from broker.domain import Role, utcnow
from broker.policy import Principal
from broker.scheduling.model import Availability, SessionKind, SessionStatus, WeeklyHours
from broker.scheduling.service import NewSession, Scheduling
from broker.store.base import Store
from broker.store.schedule_base import SessionQuery

CLINIC_NAME = "CityCall Demo Clinic"
CLINIC_TZ = "Europe/Berlin"
PASSWORD = "citycall-demo-1"


@dataclass(frozen=True, slots=True)
class DemoLogin:
    role: str
    email: str
    password: str
    display_name: str


DEMO_PEOPLE = (
    ("admin", "admin@demo.citycall.test", "Dana Admin"),
    ("clinician", "clinician@demo.citycall.test", "Dr. Chris Clinician"),
    ("patient", "patient@demo.citycall.test", "Pat Patient"),
    ("family", "grandma@demo.citycall.test", "Grandma Rose"),
    ("family", "grandson@demo.citycall.test", "Sam Grandson"),
)


async def seed(
    store: Store, accounts: Accounts, scheduling: Scheduling | None = None
) -> list[DemoLogin]:
    clinic = await store.find_clinic_by_name(CLINIC_NAME)
    if clinic is None:
        clinic = await accounts.create_clinic(CLINIC_NAME, CLINIC_TZ)
    logins = []
    for role, email, name in DEMO_PEOPLE:
        if await store.get_user_by_email(email) is None:
            r = Role(role)
            await accounts.create_user(
                NewUser(
                    email,
                    PASSWORD,
                    name,
                    r,
                    clinic_id=clinic.id if r.is_staff else None,
                    time_zone=CLINIC_TZ,
                )
            )
        logins.append(DemoLogin(role, email, PASSWORD, name))
    if scheduling is not None:
        await _seed_schedule(store, scheduling, clinic.id)
    return logins


async def _user_id(store: Store, email: str) -> str:
    user = await store.get_user_by_email(email)
    assert user is not None
    return user.id


async def _seed_schedule(store: Store, scheduling: Scheduling, clinic_id: str) -> None:
    """Availability, and a few sessions from now on, unless today's are already there."""
    clinician = await _user_id(store, DEMO_PEOPLE[1][1])
    patient = await _user_id(store, DEMO_PEOPLE[2][1])
    grandma = await _user_id(store, DEMO_PEOPLE[3][1])
    grandson = await _user_id(store, DEMO_PEOPLE[4][1])
    doctor = Principal(clinician, Role.CLINICIAN, clinic_id)
    if await store.get_availability(clinician) is None:
        await scheduling.set_availability(
            doctor,
            Availability(
                clinician,
                clinic_id,
                CLINIC_TZ,
                20,
                tuple(WeeklyHours(d, time(8), time(20)) for d in range(7)),
            ),
        )
    now = utcnow().replace(second=0, microsecond=0)
    upcoming = await store.list_sessions(
        SessionQuery(
            user_id=clinician,
            starts_from=now - timedelta(hours=1),
            statuses=(SessionStatus.BOOKED,),
        )
    )
    if upcoming:
        return
    soon = now + timedelta(minutes=5)
    later = now + timedelta(hours=2)
    for start, title in ((soon, "Blood pressure check-up"), (later, "Medication review")):
        await scheduling.create(
            doctor,
            NewSession(
                SessionKind.CHECKUP,
                title,
                start,
                start + timedelta(minutes=20),
                CLINIC_TZ,
                clinician_id=clinician,
                patient_id=patient,
            ),
        )
    family = Principal(grandson, Role.FAMILY, None)
    call = now + timedelta(minutes=30)
    await scheduling.create(
        family,
        NewSession(
            SessionKind.FAMILY_CALL,
            "Call with Grandma",
            call,
            call + timedelta(minutes=30),
            CLINIC_TZ,
            participant_ids=(grandma,),
        ),
    )
