"""Accounts over HTTP: sign-up, login and its throttling, refresh rotation, logout, /me."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.domain import Role, utcnow
from tests.support.app import (
    PASSWORD,
    PROBLEM,
    app_services,
    auth,
    expect_problem,
    login,
    new_email,
    register,
    signed_up,
)

Client = TestClient[Any, Any]


async def post_login(client: Client, email: str, password: str) -> Any:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


# register


@pytest.mark.parametrize("role", ["patient", "family"])
async def test_register_self_service_roles(client: Client, role: str) -> None:
    email = new_email(role)
    user = await register(client, role=role, email=email, display_name="  Ana  ")
    assert user["role"] == role
    assert user["email"] == email
    assert user["display_name"] == "Ana"
    assert user["clinic_id"] is None
    assert user["id"].startswith("usr_")
    assert "password" not in user and "password_hash" not in user


@pytest.mark.parametrize("role", ["admin", "clinician", "guest"])
async def test_register_refuses_other_roles(client: Client, role: str) -> None:
    resp = await client.post(
        "/api/v1/auth/register",
        json={"email": new_email(), "password": PASSWORD, "display_name": "X", "role": role},
    )
    await expect_problem(resp, 422, "invalid_input")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
        ({"display_name": "   "}, "display_name"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
    ],
)
async def test_register_validates(client: Client, changes: dict[str, str], field: str) -> None:
    body = {"email": new_email(), "password": PASSWORD, "display_name": "X", "role": "patient"}
    resp = await client.post("/api/v1/auth/register", json={**body, **changes})
    problem_body = await expect_problem(resp, 422, "invalid_input")
    assert problem_body.get("field") == field


async def test_register_duplicate_email_case_insensitively(client: Client) -> None:
    await register(client, email="Pat.Smith@Example.org")
    resp = await client.post(
        "/api/v1/auth/register",
        json={
            "email": "  pat.smith@EXAMPLE.ORG",
            "password": PASSWORD,
            "display_name": "Other",
            "role": "family",
        },
    )
    await expect_problem(resp, 409, "email_taken")


# login


async def test_login(client: Client) -> None:
    email = new_email()
    user = await register(client, email=email)
    tokens = await login(client, email.upper(), PASSWORD)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert tokens["user"]["id"] == user["id"]
    assert tokens["access_token"].count(".") == 2
    assert tokens["refresh_token"]


async def test_wrong_password_and_unknown_user_look_the_same(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    wrong = await post_login(client, email, "wrong password!")
    unknown = await post_login(client, new_email(), "wrong password!")
    wrong_body = await expect_problem(wrong, 401, "invalid_credentials")
    unknown_body = await expect_problem(unknown, 401, "invalid_credentials")
    assert wrong_body == unknown_body
    assert wrong.headers.get("WWW-Authenticate") == unknown.headers.get("WWW-Authenticate")


async def test_account_throttle_after_three_failures(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    for _ in range(3):
        await expect_problem(
            await post_login(client, email, "wrong password!"), 401, "invalid_credentials"
        )
    # Even the right password waits now.
    resp = await post_login(client, email, PASSWORD)
    await expect_problem(resp, 429, "too_many_requests")
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    # Another account from the same address is not held up by this one.
    other = new_email()
    await register(client, email=other)
    await login(client, other, PASSWORD)


async def test_account_throttle_ignores_email_case(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    for variant in (email, email.upper(), email.title()):
        await expect_problem(
            await post_login(client, variant, "wrong password!"), 401, "invalid_credentials"
        )
    await expect_problem(await post_login(client, email, PASSWORD), 429, "too_many_requests")


async def test_address_throttle_after_twenty_failures(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    for _ in range(20):  # a different (unknown) account each time: no account throttle
        resp = await post_login(client, new_email("guess"), "wrong password!")
        await expect_problem(resp, 401, "invalid_credentials")
    resp = await post_login(client, email, PASSWORD)
    await expect_problem(resp, 429, "too_many_requests")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_successful_login_resets_account_failures(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    for _ in range(2):
        await expect_problem(
            await post_login(client, email, "wrong password!"), 401, "invalid_credentials"
        )
    await login(client, email, PASSWORD)
    for _ in range(2):
        await expect_problem(
            await post_login(client, email, "wrong password!"), 401, "invalid_credentials"
        )
    await login(client, email, PASSWORD)  # 4 failures in all, but never 3 in a row


# refresh and logout


async def refresh(client: Client, token: str) -> Any:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_reuse_revokes_the_family(client: Client) -> None:
    me = await signed_up(client)
    resp = await refresh(client, me.refresh_token)
    assert resp.status == 200
    second = await resp.json()
    assert second["refresh_token"] != me.refresh_token
    assert second["user"]["id"] == me.user_id
    me_resp = await client.get("/api/v1/me", headers=auth(second["access_token"]))
    assert me_resp.status == 200

    # The old refresh token again: someone copied it. The whole family dies.
    await expect_problem(await refresh(client, me.refresh_token), 401, "refresh_token_reused")
    await expect_problem(await refresh(client, second["refresh_token"]), 401, "invalid_token")


async def test_refresh_chain(client: Client) -> None:
    me = await signed_up(client)
    token = me.refresh_token
    for _ in range(3):
        resp = await refresh(client, token)
        assert resp.status == 200
        token = (await resp.json())["refresh_token"]


async def test_other_logins_survive_a_revoked_family(client: Client) -> None:
    me = await signed_up(client)
    phone = await login(client, me.email, PASSWORD)
    assert (await refresh(client, me.refresh_token)).status == 200
    await expect_problem(await refresh(client, me.refresh_token), 401, "refresh_token_reused")
    assert (await refresh(client, phone["refresh_token"])).status == 200


@pytest.mark.parametrize("token", ["unknown-token", "x" * 512])
async def test_refresh_with_unknown_token(client: Client, token: str) -> None:
    await expect_problem(await refresh(client, token), 401, "invalid_token")


async def test_refresh_with_an_access_token_fails(client: Client) -> None:
    me = await signed_up(client)
    resp = await refresh(client, me.access_token)
    assert resp.status in (401, 422)


async def test_logout_revokes(client: Client) -> None:
    me = await signed_up(client)
    resp = await client.post("/api/v1/auth/logout", json={"refresh_token": me.refresh_token})
    assert resp.status == 204
    await expect_problem(await refresh(client, me.refresh_token), 401, "invalid_token")
    # Logging out twice, or with an unknown token, is not an error (nothing to reveal).
    again = await client.post("/api/v1/auth/logout", json={"refresh_token": me.refresh_token})
    assert again.status == 204
    unknown = await client.post("/api/v1/auth/logout", json={"refresh_token": "nope"})
    assert unknown.status == 204


async def test_logout_revokes_refreshed_descendants(client: Client) -> None:
    me = await signed_up(client)
    second = await (await refresh(client, me.refresh_token)).json()
    resp = await client.post("/api/v1/auth/logout", json={"refresh_token": me.refresh_token})
    assert resp.status == 204
    await expect_problem(await refresh(client, second["refresh_token"]), 401, "invalid_token")


# /me


async def test_get_me(client: Client) -> None:
    me = await signed_up(client, role="family")
    resp = await client.get("/api/v1/me", headers=me.headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == me.user_id
    assert body["email"] == me.email
    assert body["role"] == "family"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_patch_me_display_name_and_time_zone(client: Client) -> None:
    me = await signed_up(client)
    resp = await client.patch(
        "/api/v1/me",
        json={"display_name": "Grandma Rose", "time_zone": "Europe/Berlin"},
        headers=me.headers,
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["display_name"], body["time_zone"]) == ("Grandma Rose", "Europe/Berlin")
    again = await (await client.get("/api/v1/me", headers=me.headers)).json()
    assert again["time_zone"] == "Europe/Berlin"


async def test_patch_me_rejects_bad_time_zone(client: Client) -> None:
    me = await signed_up(client)
    resp = await client.patch("/api/v1/me", json={"time_zone": "Nowhere"}, headers=me.headers)
    await expect_problem(resp, 422, "invalid_input")


@pytest.mark.parametrize("current", [None, "wrong password!"])
@pytest.mark.parametrize(
    "change", [{"email": "new@example.org"}, {"password": "a new long password"}]
)
async def test_changing_login_needs_the_current_password(
    client: Client, change: dict[str, str], current: str | None
) -> None:
    me = await signed_up(client)
    body = {**change, **({"current_password": current} if current else {})}
    resp = await client.patch("/api/v1/me", json=body, headers=me.headers)
    await expect_problem(resp, 403, "invalid_credentials")
    await login(client, me.email, PASSWORD)  # nothing changed


async def test_change_email(client: Client) -> None:
    me = await signed_up(client)
    new = new_email("moved")
    resp = await client.patch(
        "/api/v1/me",
        json={"email": new.upper(), "current_password": PASSWORD},
        headers=me.headers,
    )
    assert resp.status == 200
    assert (await resp.json())["email"] == new
    await login(client, new, PASSWORD)
    await expect_problem(await post_login(client, me.email, PASSWORD), 401, "invalid_credentials")


async def test_change_email_to_a_taken_one(client: Client) -> None:
    me = await signed_up(client)
    other = await signed_up(client)
    resp = await client.patch(
        "/api/v1/me",
        json={"email": other.email, "current_password": PASSWORD},
        headers=me.headers,
    )
    await expect_problem(resp, 409, "email_taken")


async def test_change_password(client: Client) -> None:
    me = await signed_up(client)
    resp = await client.patch(
        "/api/v1/me",
        json={"password": "a new long password", "current_password": PASSWORD},
        headers=me.headers,
    )
    assert resp.status == 200
    await login(client, me.email, "a new long password")
    await expect_problem(await post_login(client, me.email, PASSWORD), 401, "invalid_credentials")


async def test_change_password_validates_the_new_one(client: Client) -> None:
    me = await signed_up(client)
    resp = await client.patch(
        "/api/v1/me",
        json={"password": "short", "current_password": PASSWORD},
        headers=me.headers,
    )
    await expect_problem(resp, 422, "invalid_input")


# bearer tokens


async def test_me_without_credentials(client: Client) -> None:
    resp = await client.get("/api/v1/me")
    await expect_problem(resp, 401, "unauthenticated")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "garbage",
    ],
)
async def test_me_with_a_bad_bearer(client: Client, header: str) -> None:
    resp = await client.get("/api/v1/me", headers={"Authorization": header})
    assert resp.status == 401
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=PROBLEM)
    assert body["code"] in ("invalid_token", "unauthenticated")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_me_with_an_expired_token(client: Client) -> None:
    me = await signed_up(client)
    token, _ = app_services(client).tokens.issue_access(
        me.user_id, Role.PATIENT, None, now=utcnow() - timedelta(hours=2)
    )
    await expect_problem(await client.get("/api/v1/me", headers=auth(token)), 401, "token_expired")


async def test_access_token_of_a_missing_user(client: Client) -> None:
    """A well-signed token for an account that is gone is refused cleanly, not a crash."""
    token, _ = app_services(client).tokens.issue_access("usr_gone", Role.PATIENT, None)
    resp = await client.get("/api/v1/me", headers=auth(token))
    assert resp.status in (401, 404)
    assert resp.content_type == PROBLEM
