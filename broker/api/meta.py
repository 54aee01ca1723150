"""Operational and discovery routes: health, readiness, metrics, JWKS, OAuth metadata."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from broker.api import schemas as s
from broker.api.context import METRICS, READY_CHECKS, SETTINGS, services
from broker.api.web import Route, respond
from broker.device import GRANT_TYPE
from broker.domain import utcnow
from broker.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)
READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return respond(s.Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    extra = request.app[READY_CHECKS].items if READY_CHECKS in request.app else ()
    for name, ping in (("store", services(request).store.ping), *extra):
        try:
            await asyncio.wait_for(ping(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready
            log.warning("not ready", extra={"check": name, "error": type(exc).__name__})
            checks[name] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return respond(
        s.Health(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def jwks(request: web.Request) -> web.Response:
    response = respond(await services(request).keys.jwks(utcnow()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def oauth_metadata(request: web.Request) -> web.Response:
    """RFC 8414 authorization server metadata, so OAuth device clients find the endpoints."""
    base = request.app[SETTINGS].base_url
    return respond(
        {
            "issuer": request.app[SETTINGS].issuer,
            "token_endpoint": base + "/api/v1/auth/refresh",
            "device_authorization_endpoint": base + "/api/v1/device/code",
            "jwks_uri": base + "/.well-known/jwks.json",
            "grant_types_supported": ["refresh_token", GRANT_TYPE],
            "token_endpoint_auth_methods_supported": ["none"],
        }
    )


ROUTES = (
    Route("GET", "/healthz", healthz, "The process is up", "operations", response=s.Health),
    Route(
        "GET",
        "/readyz",
        readyz,
        "The store (and Redis) answer",
        "operations",
        response=s.Health,
        errors=(503,),
    ),
    Route("GET", "/metrics", metrics, "Prometheus metrics (text format)", "operations"),
    Route(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        "Public keys that sign access and join tokens",
        "discovery",
        response=s.Jwks,
    ),
    Route(
        "GET",
        "/.well-known/oauth-authorization-server",
        oauth_metadata,
        "OAuth 2.0 authorization server metadata (RFC 8414)",
        "discovery",
    ),
)
