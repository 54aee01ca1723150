"""``--demo``: a clinic with an admin and a clinician, a patient and two family members.

Seeding is idempotent: accounts are looked up by e-mail and made only when missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.accounts import Accounts, NewUser
from broker.domain import Role
from broker.store.base import Store

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


async def seed(store: Store, accounts: Accounts) -> list[DemoLogin]:
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
    return logins
