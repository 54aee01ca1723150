"""Clinics over HTTP: staff management, tenant isolation, and clinic API keys."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.domain import Role
from tests.support.app import (
    PASSWORD,
    Account,
    auth,
    expect_problem,
    login,
    new_email,
    signed_up,
    staff_account,
)

Client = TestClient[Any, Any]


def staff_body(role: str = "clinician", **changes: str) -> dict[str, str]:
    return {
        "email": new_email(role),
        "password": PASSWORD,
        "display_name": "Dr Who",
        "role": role,
        **changes,
    }


async def add_staff(client: Client, by: Account, clinic_id: str, body: dict[str, str]) -> Any:
    return await client.post(f"/api/v1/clinics/{clinic_id}/staff", json=body, headers=by.headers)


async def create_key(client: Client, admin: Account, name: str = "EHR") -> dict[str, Any]:
    resp = await client.post(
        f"/api/v1/clinics/{admin.clinic_id}/api-keys", json={"name": name}, headers=admin.headers
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


# staff


async def test_admin_adds_clinician_who_can_log_in(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    assert clinic is not None
    body = staff_body("clinician")
    resp = await add_staff(client, clinic_admin, clinic, body)
    assert resp.status == 201
    created = await resp.json()
    assert created["role"] == "clinician"
    assert created["clinic_id"] == clinic
    tokens = await login(client, body["email"], PASSWORD)
    assert tokens["user"]["clinic_id"] == clinic

    listed = await client.get(f"/api/v1/clinics/{clinic}/staff", headers=clinic_admin.headers)
    assert listed.status == 200
    ids = [u["id"] for u in (await listed.json())["items"]]
    assert ids == [clinic_admin.user_id, created["id"]]  # by creation time


async def test_admin_adds_admin(client: Client, clinic_admin: Account) -> None:
    assert clinic_admin.clinic_id is not None
    resp = await add_staff(client, clinic_admin, clinic_admin.clinic_id, staff_body("admin"))
    assert resp.status == 201


@pytest.mark.parametrize("role", ["patient", "family", "guest"])
async def test_staff_must_have_a_staff_role(
    client: Client, clinic_admin: Account, role: str
) -> None:
    assert clinic_admin.clinic_id is not None
    resp = await add_staff(client, clinic_admin, clinic_admin.clinic_id, staff_body(role))
    await expect_problem(resp, 422, "invalid_input")


async def test_staff_email_must_be_free(client: Client, clinic_admin: Account) -> None:
    assert clinic_admin.clinic_id is not None
    patient = await signed_up(client)
    body = staff_body("clinician", email=patient.email.upper())
    resp = await add_staff(client, clinic_admin, clinic_admin.clinic_id, body)
    await expect_problem(resp, 409, "email_taken")


async def test_clinician_cannot_add_staff(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    assert clinic is not None
    clinician = await staff_account(client, clinic, Role.CLINICIAN)
    resp = await add_staff(client, clinician, clinic, staff_body("clinician"))
    await expect_problem(resp, 403, "forbidden")
    # ... but may see the clinic and its staff.
    ok = await client.get(f"/api/v1/clinics/{clinic}/staff", headers=clinician.headers)
    assert ok.status == 200
    info = await client.get(f"/api/v1/clinics/{clinic}", headers=clinician.headers)
    assert info.status == 200
    assert (await info.json())["time_zone"] == "Europe/Berlin"


async def test_patient_cannot_list_staff(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    patient = await signed_up(client)
    resp = await client.get(f"/api/v1/clinics/{clinic}/staff", headers=patient.headers)
    await expect_problem(resp, 403, "forbidden")
    resp = await client.get(f"/api/v1/clinics/{clinic}", headers=patient.headers)
    await expect_problem(resp, 403, "forbidden")
    resp = await add_staff(client, patient, str(clinic), staff_body("admin"))
    await expect_problem(resp, 403, "forbidden")


async def test_tenant_isolation(client: Client, clinic_admin: Account) -> None:
    other = await staff_account(client)  # admin of a second clinic
    assert other.clinic_id != clinic_admin.clinic_id
    b = other.clinic_id
    for path in (
        f"/api/v1/clinics/{b}",
        f"/api/v1/clinics/{b}/staff",
        f"/api/v1/clinics/{b}/api-keys",
    ):
        resp = await client.get(path, headers=clinic_admin.headers)
        await expect_problem(resp, 403, "forbidden")
    resp = await add_staff(client, clinic_admin, str(b), staff_body("admin"))
    await expect_problem(resp, 403, "forbidden")
    resp = await client.post(
        f"/api/v1/clinics/{b}/api-keys", json={"name": "mine now"}, headers=clinic_admin.headers
    )
    await expect_problem(resp, 403, "forbidden")


async def test_staff_routes_need_authentication(client: Client, clinic_admin: Account) -> None:
    resp = await client.get(f"/api/v1/clinics/{clinic_admin.clinic_id}/staff")
    await expect_problem(resp, 401, "unauthenticated")


# API keys


async def test_api_key_lifecycle(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    created = await create_key(client, clinic_admin, "EHR connector")
    secret = created["secret"]
    key = created["key"]
    assert secret.startswith(f"cck_{key['id']}.")
    assert key["clinic_id"] == clinic and key["name"] == "EHR connector"
    assert key["revoked_at"] is None

    # The secret is shown once: listing the keys never shows it again.
    listed = await client.get(f"/api/v1/clinics/{clinic}/api-keys", headers=clinic_admin.headers)
    assert listed.status == 200
    text = await listed.text()
    assert secret.split(".", 1)[1] not in text
    assert [k["id"] for k in (await listed.json())["items"]] == [key["id"]]

    # The key acts for its clinic.
    staff = await client.get(f"/api/v1/clinics/{clinic}/staff", headers=auth(secret))
    assert staff.status == 200
    assert [u["id"] for u in (await staff.json())["items"]] == [clinic_admin.user_id]
    info = await client.get(f"/api/v1/clinics/{clinic}", headers=auth(secret))
    assert info.status == 200

    # Revoked: refused.
    revoke = await client.delete(
        f"/api/v1/clinics/{clinic}/api-keys/{key['id']}", headers=clinic_admin.headers
    )
    assert revoke.status == 204
    resp = await client.get(f"/api/v1/clinics/{clinic}/staff", headers=auth(secret))
    await expect_problem(resp, 401, "invalid_api_key")
    listed = await client.get(f"/api/v1/clinics/{clinic}/api-keys", headers=clinic_admin.headers)
    assert (await listed.json())["items"][0]["revoked_at"] is not None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # wrong secret
        lambda s: s.split(".")[0] + ".",  # no secret
        lambda s: s.split(".")[0],  # no separator
        lambda s: "cck_key_nope." + s.split(".")[1],  # unknown key id
        lambda s: "cck_",
    ],
)
async def test_wrong_api_keys(client: Client, clinic_admin: Account, mangle: Any) -> None:
    secret = (await create_key(client, clinic_admin))["secret"]
    resp = await client.get(
        f"/api/v1/clinics/{clinic_admin.clinic_id}/staff", headers=auth(mangle(secret))
    )
    await expect_problem(resp, 401, "invalid_api_key")


async def test_api_key_of_clinic_a_on_clinic_b(client: Client, clinic_admin: Account) -> None:
    secret = (await create_key(client, clinic_admin))["secret"]
    other = await staff_account(client)
    for path in (f"/api/v1/clinics/{other.clinic_id}", f"/api/v1/clinics/{other.clinic_id}/staff"):
        resp = await client.get(path, headers=auth(secret))
        await expect_problem(resp, 403, "forbidden")


async def test_api_key_refused_on_user_only_routes(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    secret = (await create_key(client, clinic_admin))["secret"]
    key = auth(secret)
    attempts = [
        client.get("/api/v1/me", headers=key),
        client.patch("/api/v1/me", json={"display_name": "x"}, headers=key),
        client.get(f"/api/v1/clinics/{clinic}/api-keys", headers=key),
        client.post(f"/api/v1/clinics/{clinic}/api-keys", json={"name": "n"}, headers=key),
        client.post(f"/api/v1/clinics/{clinic}/staff", json=staff_body(), headers=key),
        client.get("/api/v1/device/pairing?user_code=BCDF-GHJK", headers=key),
    ]
    for attempt in attempts:
        await expect_problem(await attempt, 403, "api_key_not_allowed")


async def test_only_admins_manage_keys(client: Client, clinic_admin: Account) -> None:
    clinic = clinic_admin.clinic_id
    assert clinic is not None
    key_id = (await create_key(client, clinic_admin))["key"]["id"]
    clinician = await staff_account(client, clinic, Role.CLINICIAN)
    base = f"/api/v1/clinics/{clinic}/api-keys"
    resp = await client.post(base, json={"name": "n"}, headers=clinician.headers)
    await expect_problem(resp, 403, "forbidden")
    await expect_problem(await client.get(base, headers=clinician.headers), 403, "forbidden")
    resp = await client.delete(f"{base}/{key_id}", headers=clinician.headers)
    await expect_problem(resp, 403, "forbidden")


async def test_revoking_another_clinics_key_is_not_found(
    client: Client, clinic_admin: Account
) -> None:
    key_id = (await create_key(client, clinic_admin))["key"]["id"]
    other = await staff_account(client)
    resp = await client.delete(
        f"/api/v1/clinics/{other.clinic_id}/api-keys/{key_id}", headers=other.headers
    )
    await expect_problem(resp, 404, "not_found")
