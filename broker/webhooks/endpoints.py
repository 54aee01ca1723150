"""A clinic's webhook endpoints: the service behind the REST routes, and what a URL may be."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from broker.domain import Role, new_id, utcnow
from broker.egress import literal_not_public
from broker.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.scheduling.model import Delivery, WebhookEndpoint
from broker.store.schedule_base import ScheduleStore
from broker.webhooks.events import EVENT_TYPES
from broker.webhooks.signing import new_secret

log = logging.getLogger(__name__)
MAX_URL_LENGTH = 2048
MAX_ENDPOINTS_PER_CLINIC = 20


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook target, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "must not contain spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; verify the signature instead"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has an invalid port"
    return None


def can_manage_webhooks(p: Principal, clinic_id: str) -> bool:
    """A clinic's admins and its API keys (its EHR) manage its webhooks."""
    return p.clinic_id == clinic_id and (p.role is Role.ADMIN or p.api_key)


def check_event_types(types: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(types))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0]!r}", field="event_types")
    return chosen


class Webhooks:
    def __init__(
        self,
        store: ScheduleStore,
        clock: Callable[[], datetime] = utcnow,
        max_endpoints: int = MAX_ENDPOINTS_PER_CLINIC,
        private_targets: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max = max_endpoints
        self._private = private_targets  # else a literal IP must be public (broker/egress.py)

    async def create(
        self, by: Principal, clinic_id: str, url: str, event_types: Sequence[str] = ()
    ) -> WebhookEndpoint:
        """A new endpoint; the only time its ``secret`` is returned."""
        _allow(by, clinic_id)
        problem = url_problem(url)
        if problem is None and not self._private and literal_not_public(url):
            problem = "must name a public address (this broker delivers to no private network)"
        if problem is not None:
            raise InvalidInput(f"url {problem}", field="url")
        types = check_event_types(event_types)
        if len(await self._store.list_webhooks(clinic_id)) >= self._max:
            raise Conflict(
                f"a clinic can have at most {self._max} webhooks", code="too_many_webhooks"
            )
        endpoint = WebhookEndpoint(
            id=new_id("whk"),
            clinic_id=clinic_id,
            url=url,
            secret=new_secret(),
            created_at=self._clock(),
            event_types=types,
        )
        await self._store.create_webhook(endpoint)
        log.info(
            "webhook created",
            extra={"endpoint_id": endpoint.id, "clinic_id": clinic_id, "by": by.subject},
        )
        return endpoint

    async def list(self, by: Principal, clinic_id: str) -> builtins.list[WebhookEndpoint]:
        """The clinic's endpoints, with ``secret`` blanked."""
        _allow(by, clinic_id)
        return [replace(e, secret="") for e in await self._store.list_webhooks(clinic_id)]

    async def delete(self, by: Principal, clinic_id: str, endpoint_id: str) -> None:
        """Remove the endpoint; its undelivered events are dropped."""
        await self._endpoint(by, clinic_id, endpoint_id)
        await self._store.delete_webhook(endpoint_id)
        log.info(
            "webhook deleted",
            extra={"endpoint_id": endpoint_id, "clinic_id": clinic_id, "by": by.subject},
        )

    async def deliveries(
        self, by: Principal, clinic_id: str, endpoint_id: str, limit: int = 100
    ) -> builtins.list[Delivery]:
        """The endpoint's delivery log (store order: oldest first)."""
        await self._endpoint(by, clinic_id, endpoint_id)
        return await self._store.list_deliveries(endpoint_id, max(1, min(limit, 500)))

    async def _endpoint(self, by: Principal, clinic_id: str, endpoint_id: str) -> WebhookEndpoint:
        _allow(by, clinic_id)
        endpoint = await self._store.get_webhook(endpoint_id)
        if endpoint is None or endpoint.clinic_id != clinic_id:
            raise NotFound("no such webhook")
        return endpoint


DeliveryStatus = Literal["pending", "failing", "delivered"]


def delivery_status(d: Delivery) -> DeliveryStatus:
    """``delivered``, ``failing`` (retrying after errors) or ``pending``."""
    if d.delivered_at is not None:
        return "delivered"
    return "failing" if d.attempts else "pending"


def _allow(by: Principal, clinic_id: str) -> None:
    if not can_manage_webhooks(by, clinic_id):
        raise PermissionDenied("only the clinic's admins and API keys manage its webhooks")
