"""The one composition root: picks the store backend and wires services and routes."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from importlib import metadata
from pathlib import Path

from aiohttp import web

from broker.accounts import Accounts
from broker.api import auth as auth_api
from broker.api import availability as availability_api
from broker.api import clinics as clinics_api
from broker.api import device as device_api
from broker.api import joining as joining_api
from broker.api import meta as meta_api
from broker.api import openapi
from broker.api import preflight as preflight_api
from broker.api import sessions as sessions_api
from broker.api import standards as standards_api
from broker.api import webhooks as webhooks_api
from broker.api.context import (
    METRICS,
    READY_CHECKS,
    SERVICES,
    SETTINGS,
    Probes,
    Services,
)
from broker.api.middleware import cors, observe, problems, security_headers
from broker.api.web import Route, with_auth
from broker.apikeys import ApiKeys
from broker.auth import Auth
from broker.config import Settings
from broker.device import DeviceFlow
from broker.domain import utcnow
from broker.metrics import Metrics
from broker.passwords import HashParams, Passwords
from broker.scheduling.joining import Joining
from broker.scheduling.model import Event
from broker.scheduling.service import EventSink, Scheduling
from broker.scheduling.sweeper import Sweeper
from broker.store.base import Store
from broker.tokens import KeyRing, Tokens, load_local_keys
from broker.webhooks import POLL_ALONE, POLL_SHARED, Outbox, Webhooks, WebhookWorker
from signaling.bus.base import Bus
from signaling.handler import SignalingHandler
from signaling.node import SignalingNode
from signaling.rooms import Rooms

SIGNALING = web.AppKey("signaling", SignalingHandler)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def all_routes() -> tuple[Route, ...]:
    return (
        *meta_api.ROUTES,
        *auth_api.ROUTES,
        *clinics_api.ROUTES,
        *device_api.ROUTES,
        *sessions_api.ROUTES,
        *joining_api.ROUTES,
        *availability_api.ROUTES,
        *preflight_api.ROUTES,
        *webhooks_api.ROUTES,
        *standards_api.ROUTES,
    )


async def open_store(settings: Settings) -> Store:
    if settings.redis_url:
        from broker.store.redis import RedisStore

        return await RedisStore.connect(settings.redis_url)
    from broker.store.sqlite import SqliteStore

    return await SqliteStore.open(settings.data_dir / "citycall.db")


async def build_services(
    settings: Settings,
    store: Store,
    events: EventSink,
    hash_params: HashParams | None = None,
) -> Services:
    now = utcnow()
    keys = KeyRing(store, load_local_keys(settings, now))
    await keys.publish(now)
    tokens = Tokens(keys, settings.issuer, settings.access_token_ttl)
    auth = Auth(store, tokens, settings.refresh_token_ttl)
    return Services(
        store=store,
        keys=keys,
        tokens=tokens,
        accounts=Accounts(store, Passwords(hash_params)),
        auth=auth,
        api_keys=ApiKeys(store),
        device=DeviceFlow(store, auth, settings.device_code_ttl, settings.device_poll_interval),
        events=events,
        webhooks=Webhooks(store, private_targets=settings.webhook_private_targets),
        scheduling=Scheduling(store, events),
        joining=Joining(
            store,
            tokens,
            events,
            timedelta(minutes=settings.join_before_minutes),
            timedelta(minutes=settings.join_grace_minutes),
        ),
    )


class Fanout:
    """An ``EventSink`` passing each event to several sinks (webhooks, signaling)."""

    def __init__(self, sinks: list[EventSink]) -> None:
        self.sinks = sinks

    async def emit(self, event: Event) -> None:
        for sink in self.sinks:
            await sink.emit(event)


async def open_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        from signaling.bus.redis import RedisBus

        return await RedisBus.connect(settings.redis_url)
    from signaling.bus.memory import MemoryBus

    return MemoryBus()


async def start_signaling(settings: Settings, svc: Services) -> SignalingHandler:
    bus = await open_bus(settings)
    node = SignalingNode(bus, Rooms(bus, svc.store, svc.joining), settings.signaling_grace)
    await node.start()
    return SignalingHandler(node, svc.tokens, svc.joining, settings, settings.heartbeat)


def _version() -> str:
    try:
        return metadata.version("citycall")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings, hash_params: HashParams | None = None) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[observe, security_headers, cors, problems],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(settings)
        worker = WebhookWorker(
            store,
            poll_interval=POLL_SHARED if settings.redis_url else POLL_ALONE,
            private_targets=settings.webhook_private_targets,
        )
        events = Fanout([Outbox(store, wake=worker.wake)])
        try:
            svc = app[SERVICES] = await build_services(settings, store, events, hash_params)
            handler = await start_signaling(settings, svc)
            app[SIGNALING] = handler
            app[READY_CHECKS] = Probes((("bus", handler.node.bus.ping),))
            events.sinks.append(handler.node)
            sweeper = Sweeper(
                store,
                svc.events,
                timedelta(minutes=settings.join_before_minutes),
                timedelta(minutes=settings.join_grace_minutes),
                timedelta(minutes=settings.reminder_minutes),
            )
            sweeper.start()
            worker.start()
            try:
                yield
            finally:
                await worker.stop()
                await sweeper.stop()
                await handler.close_all()
        finally:
            await store.close()

    async def shutdown(app: web.Application) -> None:
        if SIGNALING in app:
            await app[SIGNALING].close_all()  # clients reconnect elsewhere, then we stop

    async def websocket(request: web.Request) -> web.StreamResponse:
        return await request.app[SIGNALING](request)

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(preflight_api.context)
    app.cleanup_ctx.append(frozen_heap)
    app.on_shutdown.append(shutdown)
    app.router.add_get("/ws", websocket)
    add_routes(app, all_routes())
    _add_static(app)
    return app


async def frozen_heap(app: web.Application) -> AsyncIterator[None]:
    """Keep what start-up built (modules, classes, services: most of the heap) out of the
    garbage collector's full passes, which otherwise stall the event loop for 60-80 ms every
    few thousand joins. Last in ``cleanup_ctx``, so everything before it is started."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    routes = tuple(routes)
    document = openapi.build(routes, "CityCall broker", _version())
    for route in routes:
        app.router.add_route(route.method, route.path, with_auth(route))
    app.router.add_get("/openapi.json", openapi.handler(document))


def _add_static(app: web.Application) -> None:
    if not STATIC_DIR.is_dir():
        return

    # The browser and TV pages; their scripts, styles and icon are under /static/.
    pages = {"/": "index.html", "/pair": "pair.html", "/tv": "tv.html", "/join": "join.html"}

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / pages[request.path])

    for path in pages:
        app.router.add_get(path, page)
    app.router.add_static("/static/", STATIC_DIR)
