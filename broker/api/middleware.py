"""Middlewares: RFC 9457 problem details, security headers, CORS, metrics and access logs."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from aiohttp import web

from broker.api.context import METRICS, SETTINGS
from broker.api.web import Handler
from broker.errors import (
    AuthenticationFailed,
    BrokerError,
    Conflict,
    DeviceFlowError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StoreError,
    Throttled,
)

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

# Error classes -> HTTP status. The only place that knows both.
_STATUS: tuple[tuple[type[BrokerError], int], ...] = (
    (DeviceFlowError, 400),  # RFC 8628 / RFC 6749 section 5.2
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (Throttled, 429),
    (StoreError, 503),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def status_of(error: BrokerError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def problem(
    status: int, code: str, detail: str | None, extra: dict[str, Any] | None = None
) -> web.Response:
    from http import HTTPStatus

    body: dict[str, Any] = {
        "type": f"urn:citycall:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return web.Response(body=msgspec.json.encode(body), status=status, content_type=PROBLEM_TYPE)


def problem_for(error: BrokerError) -> web.Response:
    status = status_of(error)
    extra = {k: v for k, v in error.extra.items() if isinstance(v, str | int | float | bool)}
    if isinstance(error, DeviceFlowError):
        # OAuth clients read ``error``; keep both vocabularies.
        extra["error"] = error.code
        extra["error_description"] = error.message
    response = problem(status, error.code, error.message, extra)
    if isinstance(error, Throttled):
        response.headers["Retry-After"] = str(error.retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="citycall"'
    return response


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BrokerError as exc:
        return problem_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = problem(exc.status, code, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return problem(500, "internal", "internal error")


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        if request.path.startswith("/api/") or request.path.startswith("/.well-known/"):
            response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    allowed = request.app[SETTINGS].cors_origins
    origin = request.headers.get("Origin")
    permitted = origin is not None and ("*" in allowed or origin in allowed)
    if (
        request.method == "OPTIONS"
        and permitted
        and "Access-Control-Request-Method" in (request.headers)
    ):
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, PUT, DELETE"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if permitted and not response.prepared:
        assert origin is not None
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics and one access-log line per request: method, route, status, time. No bodies."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - start
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        log.info(
            "request",
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "ms": round(elapsed * 1000, 2),
            },
        )
