"""Webhook endpoints of a clinic, and their delivery log.

The ``Webhooks`` service is one of the app's ``Services``.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec
from aiohttp import web

from broker.api.context import services
from broker.api.web import Query, Route, no_content, principal, read_body, respond
from broker.errors import InvalidInput
from broker.scheduling.model import Delivery, WebhookEndpoint
from broker.webhooks import MAX_URL_LENGTH, DeliveryStatus, delivery_status

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

# Must list exactly ``broker.webhooks.EVENT_TYPES`` (a test checks).
EventType = Literal[
    "session.created",
    "session.updated",
    "session.cancelled",
    "session.starting_soon",
    "session.started",
    "session.ended",
    "session.noshow",
    "participant.joined",
    "participant.admitted",
    "participant.left",
]
Url = Annotated[
    str,
    msgspec.Meta(
        min_length=8, max_length=MAX_URL_LENGTH, examples=["https://ehr.example.org/hooks"]
    ),
]


class WebhookRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: Url
    event_types: Annotated[list[EventType], msgspec.Meta(max_length=len(get_args(EventType)))] = []


class WebhookOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    clinic_id: str
    url: str
    event_types: list[str]  # empty: every event type
    created_at: str
    disabled: bool

    @classmethod
    def of(cls, e: WebhookEndpoint) -> WebhookOut:
        return cls(
            id=e.id,
            clinic_id=e.clinic_id,
            url=e.url,
            event_types=list(e.event_types),
            created_at=e.created_at.isoformat(),
            disabled=e.disabled,
        )


class WebhookCreated(msgspec.Struct, frozen=True, kw_only=True):
    webhook: WebhookOut
    secret: str  # whsec_..., the signing key; shown once


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookOut]


class WebhookDeliveryOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    event_id: str
    event_type: str
    session_id: str
    occurred_at: str
    seq: int
    status: DeliveryStatus
    attempts: int  # failed attempts so far
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None

    @classmethod
    def of(cls, d: Delivery) -> WebhookDeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event.id,
            event_type=d.event.type,
            session_id=d.event.session_id,
            occurred_at=d.event.occurred_at.isoformat(),
            seq=d.seq,
            status=delivery_status(d),
            attempts=d.attempts,
            next_attempt_at=None
            if d.delivered_at or d.next_attempt_at is None
            else d.next_attempt_at.isoformat(),
            delivered_at=d.delivered_at.isoformat() if d.delivered_at else None,
            last_error=d.last_error,
        )


class WebhookDeliveryList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookDeliveryOut]


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


async def create_webhook(request: web.Request) -> web.Response:
    body = await read_body(request, WebhookRequest)
    endpoint = await services(request).webhooks.create(
        principal(request), request.match_info["clinic_id"], body.url, body.event_types
    )
    return respond(WebhookCreated(webhook=WebhookOut.of(endpoint), secret=endpoint.secret), 201)


async def list_webhooks(request: web.Request) -> web.Response:
    items = await services(request).webhooks.list(
        principal(request), request.match_info["clinic_id"]
    )
    return respond(WebhookList(items=[WebhookOut.of(e) for e in items]))


async def delete_webhook(request: web.Request) -> web.Response:
    await services(request).webhooks.delete(
        principal(request), request.match_info["clinic_id"], request.match_info["endpoint_id"]
    )
    return no_content()


async def list_deliveries(request: web.Request) -> web.Response:
    items = await services(request).webhooks.deliveries(
        principal(request),
        request.match_info["clinic_id"],
        request.match_info["endpoint_id"],
        _limit(request),
    )
    return respond(WebhookDeliveryList(items=[WebhookDeliveryOut.of(d) for d in items]))


_HOOKS = "/api/v1/clinics/{clinic_id}/webhooks"
ROUTES = (
    Route(
        "POST",
        _HOOKS,
        create_webhook,
        "Subscribe a URL to the clinic's events; the signing secret is shown once",
        "webhooks",
        auth="user_or_key",
        body=WebhookRequest,
        response=WebhookCreated,
        status=201,
        errors=(401, 403, 409, 422),
    ),
    Route(
        "GET",
        _HOOKS,
        list_webhooks,
        "The clinic's webhook endpoints (admins and API keys)",
        "webhooks",
        auth="user_or_key",
        response=WebhookList,
        errors=(401, 403),
    ),
    Route(
        "DELETE",
        _HOOKS + "/{endpoint_id}",
        delete_webhook,
        "Remove a webhook endpoint; its undelivered events are dropped",
        "webhooks",
        auth="user_or_key",
        status=204,
        errors=(401, 403, 404),
    ),
    Route(
        "GET",
        _HOOKS + "/{endpoint_id}/deliveries",
        list_deliveries,
        "The endpoint's delivery log: attempts, status and last error",
        "webhooks",
        auth="user_or_key",
        response=WebhookDeliveryList,
        errors=(401, 403, 404, 422),
        query=(Query("limit", f"at most this many deliveries (1-{MAX_LIMIT}, default 100)"),),
    ),
)
