"""TV pairing over HTTP, end to end: the OAuth 2.0 Device Authorization Grant (RFC 8628)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.device import GRANT_TYPE
from broker.domain import utcnow
from broker.tokens import secret_hash
from tests.support.app import (
    PROBLEM,
    Account,
    app_services,
    auth,
    expect_problem,
    make_client,
    signed_up,
)

Client = TestClient[Any, Any]
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


async def start(client: Client, **kwargs: Any) -> dict[str, Any]:
    kwargs = kwargs or {"json": {"client_id": "living-room-tv"}}
    resp = await client.post("/api/v1/device/code", **kwargs)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def poll(client: Client, device_code: str, form: bool = False) -> Any:
    body = {"grant_type": GRANT_TYPE, "device_code": device_code}
    if form:
        return await client.post("/api/v1/device/token", data=body)
    return await client.post("/api/v1/device/token", json=body)


async def expect_oauth_error(resp: Any, error: str) -> dict[str, Any]:
    """RFC 8628 errors: HTTP 400 with the RFC's ``error`` and the same ``code``."""
    body = await expect_problem(resp, 400, error)
    assert body["error"] == error
    assert body["error_description"]
    return body


async def decide(client: Client, who: Account, user_code: str, approve: bool) -> Any:
    return await client.post(
        "/api/v1/device/pairing",
        json={"user_code": user_code, "approve": approve},
        headers=who.headers,
    )


async def test_device_code_response(client: Client, settings: Settings) -> None:
    grant = await start(client)
    assert USER_CODE.match(grant["user_code"])
    assert grant["verification_uri"] == settings.base_url + "/pair"
    assert grant["verification_uri_complete"] == (
        f"{settings.base_url}/pair?code={grant['user_code']}"
    )
    assert grant["expires_in"] == settings.device_code_ttl
    assert grant["interval"] == settings.device_poll_interval
    assert len(grant["device_code"]) >= 40
    assert grant["device_code"] != grant["user_code"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"client_id": "kitchen-tv"}},  # form-encoded, as OAuth device clients send
        {"json": {}},
        {},  # no body at all
    ],
    ids=["form", "empty-json", "no-body"],
)
async def test_device_code_request_shapes(client: Client, kwargs: dict[str, Any]) -> None:
    resp = await client.post("/api/v1/device/code", **kwargs)
    assert resp.status == 200, await resp.text()
    assert USER_CODE.match((await resp.json())["user_code"])


async def test_device_code_refuses_long_client_id(client: Client) -> None:
    resp = await client.post("/api/v1/device/code", json={"client_id": "x" * 65})
    await expect_problem(resp, 422, "invalid_input")


async def test_pairing_end_to_end(client: Client) -> None:
    family = await signed_up(client, role="family")
    tv = await start(client)

    # The TV polls before anyone approved...
    await expect_oauth_error(await poll(client, tv["device_code"]), "authorization_pending")
    # ... and again right away: too fast, the interval grows.
    slow = await expect_oauth_error(await poll(client, tv["device_code"]), "slow_down")
    assert slow["interval"] > tv["interval"]

    # The phone looks the code up, then approves.
    resp = await client.get(
        "/api/v1/device/pairing", params={"user_code": tv["user_code"]}, headers=family.headers
    )
    assert resp.status == 200
    pending = await resp.json()
    assert pending["user_code"] == tv["user_code"]
    assert pending["client_id"] == "living-room-tv"
    assert 0 < pending["expires_in"] <= tv["expires_in"]
    assert (await decide(client, family, tv["user_code"], True)).status == 204

    # The TV gets tokens for the family member.
    resp = await poll(client, tv["device_code"])
    assert resp.status == 200, await resp.text()
    tokens = await resp.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["user"]["id"] == family.user_id
    me = await client.get("/api/v1/me", headers=auth(tokens["access_token"]))
    assert me.status == 200
    me_body = await me.json()
    assert me_body["id"] == family.user_id and me_body["role"] == "family"
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status == 200

    # The device code is spent, and the user code is no longer pending.
    await expect_oauth_error(await poll(client, tv["device_code"]), "invalid_grant")
    resp = await client.get(
        "/api/v1/device/pairing", params={"user_code": tv["user_code"]}, headers=family.headers
    )
    await expect_problem(resp, 404, "invalid_user_code")
    await expect_problem(
        await decide(client, family, tv["user_code"], True), 409, "already_decided"
    )


async def test_pairing_with_form_encoded_polls(client: Client) -> None:
    patient = await signed_up(client)
    tv = await start(client, data={"client_id": "tv"})
    await expect_oauth_error(
        await poll(client, tv["device_code"], form=True), "authorization_pending"
    )
    assert (await decide(client, patient, tv["user_code"], True)).status == 204
    resp = await poll(client, tv["device_code"], form=True)
    assert resp.status == 200
    assert (await resp.json())["user"]["id"] == patient.user_id


async def test_user_code_typed_sloppily(client: Client) -> None:
    family = await signed_up(client, role="family")
    tv = await start(client)
    typed = " " + tv["user_code"].replace("-", " ").lower() + " "
    resp = await client.get(
        "/api/v1/device/pairing", params={"user_code": typed}, headers=family.headers
    )
    assert resp.status == 200
    assert (await resp.json())["user_code"] == tv["user_code"]
    assert (await decide(client, family, typed, True)).status == 204
    resp = await poll(client, tv["device_code"])
    assert resp.status == 200
    assert (await resp.json())["user"]["id"] == family.user_id


async def test_denial(client: Client) -> None:
    family = await signed_up(client, role="family")
    tv = await start(client)
    assert (await decide(client, family, tv["user_code"], False)).status == 204
    await expect_oauth_error(await poll(client, tv["device_code"]), "access_denied")
    await expect_oauth_error(await poll(client, tv["device_code"]), "access_denied")
    await expect_problem(
        await decide(client, family, tv["user_code"], True), 409, "already_decided"
    )


async def test_expiry(client: Client) -> None:
    family = await signed_up(client, role="family")
    tv = await start(client)
    store = app_services(client).store
    grant = await store.get_device_grant(secret_hash(tv["device_code"]))
    assert grant is not None
    expired = replace(grant, expires_at=utcnow() - timedelta(seconds=1))
    assert await store.update_device_grant(expired)

    await expect_oauth_error(await poll(client, tv["device_code"]), "expired_token")
    resp = await client.get(
        "/api/v1/device/pairing", params={"user_code": tv["user_code"]}, headers=family.headers
    )
    await expect_problem(resp, 404, "invalid_user_code")
    await expect_problem(
        await decide(client, family, tv["user_code"], True), 404, "invalid_user_code"
    )


async def test_approved_then_expired_gives_no_tokens(client: Client) -> None:
    family = await signed_up(client, role="family")
    tv = await start(client)
    assert (await decide(client, family, tv["user_code"], True)).status == 204
    store = app_services(client).store
    grant = await store.get_device_grant(secret_hash(tv["device_code"]))
    assert grant is not None
    assert await store.update_device_grant(
        replace(grant, expires_at=utcnow() - timedelta(seconds=1))
    )
    await expect_oauth_error(await poll(client, tv["device_code"]), "expired_token")


async def test_polling_at_the_interval_is_not_slow_down(tmp_path: Any) -> None:
    client = await make_client(Settings(data_dir=tmp_path, device_poll_interval=1))
    try:
        tv = await start(client)
        assert tv["interval"] == 1
        await expect_oauth_error(await poll(client, tv["device_code"]), "authorization_pending")
        await asyncio.sleep(1.1)
        await expect_oauth_error(await poll(client, tv["device_code"]), "authorization_pending")
    finally:
        await client.close()


async def test_concurrent_approvals_decide_once(client: Client) -> None:
    one = await signed_up(client, role="family")
    two = await signed_up(client, role="family")
    tv = await start(client)
    results = await asyncio.gather(
        decide(client, one, tv["user_code"], True), decide(client, two, tv["user_code"], True)
    )
    assert sorted(r.status for r in results) == [204, 409]
    winner = one if results[0].status == 204 else two
    resp = await poll(client, tv["device_code"])
    assert (await resp.json())["user"]["id"] == winner.user_id


@pytest.mark.parametrize("device_code", ["unknown", "x" * 512])
async def test_unknown_device_code(client: Client, device_code: str) -> None:
    await expect_oauth_error(await poll(client, device_code), "invalid_grant")


async def test_wrong_grant_type_is_refused(client: Client) -> None:
    tv = await start(client)
    resp = await client.post(
        "/api/v1/device/token",
        json={"grant_type": "password", "device_code": tv["device_code"]},
    )
    assert 400 <= resp.status < 500
    assert resp.content_type == PROBLEM


async def test_unknown_user_code(client: Client) -> None:
    family = await signed_up(client, role="family")
    for code in ("BCDF-GHJK", "----"):
        resp = await client.get(
            "/api/v1/device/pairing", params={"user_code": code}, headers=family.headers
        )
        await expect_problem(resp, 404, "invalid_user_code")
    resp = await client.get("/api/v1/device/pairing", headers=family.headers)
    await expect_problem(resp, 422, "invalid_input")


async def test_approval_needs_a_logged_in_user(client: Client) -> None:
    tv = await start(client)
    resp = await client.post(
        "/api/v1/device/pairing", json={"user_code": tv["user_code"], "approve": True}
    )
    await expect_problem(resp, 401, "unauthenticated")
    resp = await client.get("/api/v1/device/pairing", params={"user_code": tv["user_code"]})
    await expect_problem(resp, 401, "unauthenticated")
    await expect_oauth_error(await poll(client, tv["device_code"]), "authorization_pending")
