"""The HTTP surface itself: headers, errors as problem details, CORS, operations routes,
the OpenAPI document, JWKS, and what the logs may not contain."""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.logs import JsonFormatter, TextFormatter
from broker.tokens import ACCESS_AUDIENCE
from tests.support.app import (
    PASSWORD,
    app_services,
    expect_problem,
    login,
    new_email,
    register,
)

Client = TestClient[Any, Any]
ALLOWED_ORIGIN = "https://app.example.org"

# Registered routes that are not part of the REST surface: the document itself and the
# browser/TV pages served from static/.
NOT_IN_OPENAPI = {"/openapi.json", "/", "/pair", "/tv", "/join", "/ws"}


def assert_security_headers(resp: Any) -> None:
    h = resp.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert "camera=(self)" in h["Permissions-Policy"]
    assert "Strict-Transport-Security" not in h  # plain http in tests


async def test_security_headers_on_success(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert_security_headers(resp)


async def test_security_headers_and_no_store_on_errors(client: Client) -> None:
    resp = await client.get("/api/v1/me")
    assert resp.status == 401
    assert_security_headers(resp)
    assert resp.headers["Cache-Control"] == "no-store"


# errors are problem details


async def test_body_too_large(client: Client, settings: Settings) -> None:
    big = json.dumps({"email": "a@b.cd", "password": "x" * (settings.max_body_bytes + 1)})
    resp = await client.post(
        "/api/v1/auth/login", data=big, headers={"Content-Type": "application/json"}
    )
    await expect_problem(resp, 413, "body_too_large")


async def test_malformed_json(client: Client) -> None:
    resp = await client.post(
        "/api/v1/auth/login", data=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    await expect_problem(resp, 422, "malformed_json")


async def test_empty_body(client: Client) -> None:
    resp = await client.post("/api/v1/auth/login", headers={"Content-Type": "application/json"})
    await expect_problem(resp, 422, "empty_body")


async def test_unknown_field(client: Client) -> None:
    resp = await client.post(
        "/api/v1/auth/login",
        json={"email": "a@b.cd", "password": PASSWORD, "remember_me": True},
    )
    body = await expect_problem(resp, 422, "invalid_input")
    assert "remember_me" in body["detail"]


async def test_wrong_type(client: Client) -> None:
    resp = await client.post("/api/v1/auth/login", json={"email": 1, "password": PASSWORD})
    await expect_problem(resp, 422, "invalid_input")


async def test_unknown_route(client: Client) -> None:
    resp = await client.get("/api/v1/nope")
    await expect_problem(resp, 404, "not_found")
    assert_security_headers(resp)


async def test_wrong_method(client: Client) -> None:
    resp = await client.get("/api/v1/auth/login")
    await expect_problem(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


# CORS


async def test_cors_allowed_origin_is_echoed(client: Client) -> None:
    resp = await client.get("/healthz", headers={"Origin": ALLOWED_ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in resp.headers["Vary"]


async def test_cors_on_error_responses(client: Client) -> None:
    resp = await client.get("/api/v1/me", headers={"Origin": ALLOWED_ORIGIN})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


async def test_cors_other_origin_gets_nothing(client: Client) -> None:
    resp = await client.get("/healthz", headers={"Origin": "https://evil.example.com"})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_preflight(client: Client) -> None:
    resp = await client.options(
        "/api/v1/me",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


async def test_cors_preflight_from_other_origin(client: Client) -> None:
    resp = await client.options(
        "/api/v1/me",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers


# operations


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_readyz(client: Client) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {"store": "ok", "bus": "ok"}}


async def test_readyz_reports_an_unreachable_store(client: Client) -> None:
    await app_services(client).store.close()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "checks": {"store": "unavailable", "bus": "ok"},
    }
    assert (await client.get("/healthz")).status == 200  # the process itself is fine


async def test_metrics(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    await login(client, email, PASSWORD)
    bad = await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong!"})
    assert bad.status == 401
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "citycall_http_requests_total{" in text
    assert (
        'citycall_http_requests_total{method="POST",route="/api/v1/auth/login",status="200"} 1.0'
        in text
    )
    assert 'citycall_logins_total{outcome="ok"} 1.0' in text
    assert 'citycall_logins_total{outcome="failed"} 1.0' in text
    assert "citycall_http_request_seconds_bucket" in text
    assert email not in text


async def test_metrics_label_unknown_routes_without_the_path(client: Client) -> None:
    await client.get("/api/v1/secret-looking-path-usr_123")
    text = await (await client.get("/metrics")).text()
    assert "secret-looking" not in text
    assert 'route="unmatched"' in text


async def test_oauth_metadata(client: Client, settings: Settings) -> None:
    resp = await client.get("/.well-known/oauth-authorization-server")
    assert resp.status == 200
    meta = await resp.json()
    assert meta["issuer"] == settings.issuer
    assert meta["device_authorization_endpoint"] == settings.base_url + "/api/v1/device/code"
    assert meta["jwks_uri"] == settings.base_url + "/.well-known/jwks.json"
    assert "urn:ietf:params:oauth:grant-type:device_code" in meta["grant_types_supported"]


# the OpenAPI document


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        if isinstance(resource, web.StaticResource):
            continue
        if resource.canonical in NOT_IN_OPENAPI:
            continue
        out.add((route.method, resource.canonical))
    return out


async def test_openapi_documents_every_route(client: Client) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert client.app is not None
    registered = registered_routes(client.app)
    assert registered, "no routes found"
    assert registered - documented == set(), "registered but not documented"
    assert documented - registered == set(), "documented but not registered"


async def test_openapi_operations_are_complete(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    operation_ids = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            operation_ids.append(op["operationId"])
            assert op["summary"], (method, path)
            assert op["responses"], (method, path)
            for response in op["responses"].values():
                for media in response.get("content", {}).values():
                    ref = media["schema"].get("$ref", "")
                    if ref:
                        assert ref.rsplit("/", 1)[1] in schemas, ref
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
    assert len(operation_ids) == len(set(operation_ids)), "operationId must be unique"
    login_op = doc["paths"]["/api/v1/auth/login"]["post"]
    assert "429" in login_op["responses"]
    assert "security" not in login_op
    assert doc["paths"]["/api/v1/me"]["get"]["security"] == [{"bearer": []}]


# JWKS


async def test_jwks_publishes_the_key_of_issued_tokens(client: Client) -> None:
    email = new_email()
    await register(client, email=email)
    tokens = await login(client, email, PASSWORD)
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]

    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200
    assert "max-age" in resp.headers["Cache-Control"]
    jwks = await resp.json()
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert kid in by_kid
    assert all("d" not in k for k in jwks["keys"])
    # A third party can verify our token with nothing but the JWKS.
    key = jwt.PyJWK(by_kid[kid]).key
    claims = jwt.decode(tokens["access_token"], key, algorithms=["EdDSA"], audience=ACCESS_AUDIENCE)
    assert claims["sub"] == tokens["user"]["id"]


# logs


async def test_logs_hold_no_personal_data_or_secrets(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = new_email("secretive")
    name = "Rosalind Unlikelyname"
    user = await register(client, email=email, display_name=name)
    tokens = await login(client, email, PASSWORD)
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": "Wr0ng-pass!"}
    )
    assert wrong.status == 401
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody-here@example.org", "password": PASSWORD}
    )
    assert unknown.status == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status == 200
    pair = await refreshed.json()
    reused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert reused.status == 401

    forbidden = [
        email,
        email.split("@")[0],
        "nobody-here",
        PASSWORD,
        "Wr0ng-pass!",
        name,
        tokens["access_token"],
        tokens["refresh_token"],
        pair["access_token"],
        pair["refresh_token"],
    ]
    text_format, json_format = TextFormatter(), JsonFormatter()
    lines = []
    for record in caplog.records:
        lines.append(text_format.format(record))
        lines.append(json_format.format(record))
        lines.append(repr(vars(record)))
    output = "\n".join(lines)
    assert "login failed" in output  # the test saw the broker's own log lines
    assert user["id"] in output  # ids are how the audit trail names people
    for secret in forbidden:
        assert secret not in output
        assert secret.lower() not in output.lower()
