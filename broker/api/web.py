"""Small helpers every handler module uses: the route table type, body parsing, responses,
and who is calling."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from broker.api.context import SETTINGS, services
from broker.apikeys import looks_like_api_key
from broker.auth import bearer
from broker.errors import InvalidInput, PermissionDenied
from broker.policy import Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthKind = Literal["none", "user", "user_or_key"]
T = TypeVar("T", bound=msgspec.Struct)

PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass(frozen=True, slots=True)
class Route:
    """One REST route: registered on the app and described in ``/openapi.json``."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: AuthKind = "none"
    body: type[msgspec.Struct] | None = None
    response: type[msgspec.Struct] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    form_body: bool = False  # also accepts application/x-www-form-urlencoded
    query: tuple[Query, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter, for the OpenAPI document."""

    name: str
    description: str
    required: bool = False
    format: str | None = None  # e.g. "date-time"


_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)")


def invalid(exc: msgspec.ValidationError) -> InvalidInput:
    """A validation failure, naming the top-level field when msgspec says which."""
    text = str(exc)
    found = _FIELD.search(text)
    if found is None:
        return InvalidInput(text)
    return InvalidInput(text, field=found.group(1))


async def read_body(request: web.Request, kind: type[T]) -> T:
    """Parse and validate a JSON (or, where allowed, form) body into ``kind``."""
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            form = await request.post()
        except (ValueError, LookupError):  # bytes not in its charset; an unknown charset
            raise InvalidInput("request body is not a valid form", code="malformed_form") from None
        data: Any = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            return msgspec.convert(data, kind, strict=False)
        except msgspec.ValidationError as exc:
            raise invalid(exc) from None
    if not raw:
        raise InvalidInput("request body is empty; send JSON", code="empty_body")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    except msgspec.DecodeError:
        raise InvalidInput("request body is not valid JSON", code="malformed_json") from None


def respond(body: msgspec.Struct | dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


def no_content() -> web.Response:
    return web.Response(status=204)


def client_address(request: web.Request) -> str:
    if request.app[SETTINGS].trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return request.remote or "unknown"


async def authenticate(request: web.Request, kind: AuthKind) -> Principal | None:
    if kind == "none":
        return None
    credential = bearer(request.headers.get("Authorization"))
    svc = services(request)
    if looks_like_api_key(credential):
        if kind != "user_or_key":
            raise PermissionDenied("API keys cannot use this route", code="api_key_not_allowed")
        return await svc.api_keys.authenticate(credential)
    return await svc.auth.principal_from_access(credential)


def principal(request: web.Request) -> Principal:
    """The authenticated caller (routes with ``auth`` other than ``none``)."""
    try:
        return request[PRINCIPAL]
    except KeyError:
        raise RuntimeError("route has no authentication") from None


def with_auth(route: Route) -> Handler:
    """Wrap a handler so the caller is authenticated before it runs."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if route.auth != "none":
            who = await authenticate(request, route.auth)
            if who is not None:
                request[PRINCIPAL] = who
        return await route.handler(request)

    return wrapped
