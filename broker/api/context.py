"""The application's shared state, behind ``web.AppKey`` constants (no module globals)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from broker.accounts import Accounts
from broker.apikeys import ApiKeys
from broker.auth import Auth
from broker.config import Settings
from broker.device import DeviceFlow
from broker.metrics import Metrics
from broker.scheduling.joining import Joining
from broker.scheduling.service import EventSink, Scheduling
from broker.store.base import Store
from broker.tokens import KeyRing, Tokens
from broker.webhooks import Webhooks


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    keys: KeyRing
    tokens: Tokens
    accounts: Accounts
    auth: Auth
    api_keys: ApiKeys
    device: DeviceFlow
    events: EventSink
    webhooks: Webhooks
    scheduling: Scheduling
    joining: Joining


SETTINGS = web.AppKey("settings", Settings)


@dataclass(frozen=True, slots=True)
class Probes:
    """Readiness probes by name (the signaling bus), besides the store's."""

    items: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = ()


READY_CHECKS = web.AppKey("ready_checks", Probes)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
