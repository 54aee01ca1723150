"""Fixtures for the broker application in-process (aiohttp test client).

``client`` serves ``create_app(settings)`` on a loopback port through aiohttp's own
``TestServer``/``TestClient`` (no pytest-aiohttp needed). Tests that need other settings
override the ``settings`` fixture in their module. Passwords are hashed with cheap argon2
parameters so a login costs milliseconds.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.accounts import NewUser
from broker.api.context import SERVICES, Services
from broker.app import create_app
from broker.config import Settings
from broker.domain import Role
from broker.passwords import HashParams

__all__ = [
    "FAST_HASH",
    "PASSWORD",
    "PROBLEM",
    "Account",
    "app_services",
    "auth",
    "client",
    "clinic_admin",
    "expect_problem",
    "login",
    "make_client",
    "new_email",
    "register",
    "settings",
    "signed_up",
    "staff_account",
]

FAST_HASH = HashParams(time_cost=1, memory_cost=8 * 1024, parallelism=1)
PASSWORD = "correct horse battery"
PROBLEM = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Account:
    """A logged-in user: what a test needs to act as them."""

    user_id: str
    email: str
    password: str
    role: str
    clinic_id: str | None
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.access_token)


def auth(token: str) -> dict[str, str]:
    """``Authorization`` header for an access token or API key."""
    return {"Authorization": f"Bearer {token}"}


async def expect_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with this status and ``code``; return its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:citycall:problem:{code}"
    assert body["title"]
    return body


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.org"


def app_services(client: TestClient[Any, Any]) -> Services:
    app = client.app
    assert app is not None
    return app[SERVICES]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        cors_origins=("https://app.example.org",),
        webhook_private_targets=True,  # the tests' webhook receivers listen on loopback
    )


async def make_client(settings: Settings) -> TestClient[Any, Any]:
    """A started test client for a fresh app; the caller closes it."""
    app: web.Application = create_app(settings, hash_params=FAST_HASH)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    test_client = await make_client(settings)
    try:
        yield test_client
    finally:
        await test_client.close()


async def register(
    client: TestClient[Any, Any],
    role: str = "patient",
    email: str | None = None,
    password: str = PASSWORD,
    display_name: str = "Test Person",
) -> dict[str, Any]:
    """Sign up over HTTP; returns the created user (asserts 201)."""
    resp = await client.post(
        "/api/v1/auth/register",
        json={
            "email": email or new_email(role),
            "password": password,
            "display_name": display_name,
            "role": role,
        },
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


async def login(client: TestClient[Any, Any], email: str, password: str) -> dict[str, Any]:
    """Log in over HTTP; returns the token response (asserts 200)."""
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def signed_up(client: TestClient[Any, Any], role: str = "patient") -> Account:
    """Register and log in a patient or family member."""
    email = new_email(role)
    user = await register(client, role=role, email=email)
    tokens = await login(client, email, PASSWORD)
    return Account(
        user["id"],
        email,
        PASSWORD,
        role,
        None,
        tokens["access_token"],
        tokens["refresh_token"],
    )


async def staff_account(
    client: TestClient[Any, Any], clinic_id: str | None = None, role: Role = Role.ADMIN
) -> Account:
    """A staff member made through the services (a new clinic unless one is given), logged in."""
    accounts = app_services(client).accounts
    if clinic_id is None:
        clinic_id = (await accounts.create_clinic("Test Clinic", "Europe/Berlin")).id
    email = new_email(role.value)
    user = await accounts.create_user(
        NewUser(email, PASSWORD, "Dr Test", role, clinic_id=clinic_id)
    )
    tokens = await login(client, email, PASSWORD)
    return Account(
        user.id,
        email,
        PASSWORD,
        role.value,
        clinic_id,
        tokens["access_token"],
        tokens["refresh_token"],
    )


@pytest_asyncio.fixture
async def clinic_admin(client: TestClient[Any, Any]) -> Account:
    """The logged-in admin of a fresh clinic."""
    return await staff_account(client)


async def family_call(client: Any, caller: Account, callee: Account, title: str) -> str:
    """A family call starting in two minutes (inside its join window); returns its id."""
    start = datetime.now(UTC) + timedelta(minutes=2)
    resp = await client.post(
        "/api/v1/sessions",
        json={
            "kind": "family_call",
            "title": title,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "participant_ids": [callee.user_id],
        },
        headers=caller.headers,
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["items"][0]["id"])
