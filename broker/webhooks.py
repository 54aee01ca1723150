"""Signed webhooks for clinic systems, delivered from a durable outbox.

- ``sign`` / ``verify``: the Standard Webhooks scheme. Headers ``webhook-id`` (the event id,
  stable across retries), ``webhook-timestamp`` (seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``); secrets are ``whsec_<base64>``.
- ``Outbox`` is the scheduling ``EventSink``: one event -> one ``Delivery`` per subscribed
  endpoint of the event's clinic, appended to the store's outbox.
- ``WebhookWorker``: a background task on every node; only the holder of the ``webhooks``
  lease sends. The store hands out only the head of each (endpoint, session) line, so events of
  one session reach an endpoint in order; failures retry with capped exponential backoff.
- ``Webhooks``: the service behind the REST routes (a clinic's admins and its API keys).

Logs carry ids and status codes only, never a body, a URL or a secret.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import heapq
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from broker.domain import Role, new_id, utcnow
from broker.egress import NotPublic, PublicResolver, literal_not_public
from broker.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.scheduling.model import Delivery, Event, WebhookEndpoint
from broker.store.schedule_base import ScheduleStore

NOT_PUBLIC = "refused: not a public address"  # the error of a delivery to a private network
# How often an idle worker looks for deliveries nobody told it about: often where several
# nodes share the store (another node's events wake only that node's worker), rarely where it
# is the only one (every event wakes it, and it wakes itself for the retries it schedules).
POLL_SHARED = 0.5
POLL_ALONE = 5.0
log = logging.getLogger(__name__)

# Event types (the ``type`` of a payload and of an endpoint's ``event_types`` filter).
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SESSION_CANCELLED = "session.cancelled"
SESSION_STARTING_SOON = "session.starting_soon"
SESSION_STARTED = "session.started"
SESSION_ENDED = "session.ended"
SESSION_NOSHOW = "session.noshow"
PARTICIPANT_JOINED = "participant.joined"
PARTICIPANT_ADMITTED = "participant.admitted"
PARTICIPANT_LEFT = "participant.left"
EVENT_TYPES: tuple[str, ...] = (
    SESSION_CREATED,
    SESSION_UPDATED,
    SESSION_CANCELLED,
    SESSION_STARTING_SOON,
    SESSION_STARTED,
    SESSION_ENDED,
    SESSION_NOSHOW,
    PARTICIPANT_JOINED,
    PARTICIPANT_ADMITTED,
    PARTICIPANT_LEFT,
)

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
LEASE = "webhooks"
USER_AGENT = "CityCall-Webhooks/1"
MAX_URL_LENGTH = 2048
MAX_ENDPOINTS_PER_CLINIC = 20
MAX_ERROR_LENGTH = 200
MAX_DATA_VALUE_LENGTH = 500

# Event data carries ids, times and codes only: keys ending in these, or one of the named ones.
_DATA_SUFFIXES = ("_id", "_at")
_DATA_KEYS = frozenset({"reason", "status", "role", "kind", "quality"})


# Signatures (Standard Webhooks)


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes; the HMAC key is the decoded bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | datetime,
    tolerance: int = 300,
) -> bool:
    """True when one of the (space-separated) ``v1`` signatures matches and the timestamp is
    within ``tolerance`` seconds of ``now`` (either way). Header names are case-insensitive."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp", "")
    given = lower.get("webhook-signature")
    if not msg_id or given is None or not stamp.isdigit():
        return False
    now_s = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_s - int(stamp)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    return any(hmac.compare_digest(expected, sig.encode()) for sig in given.split())


# Payloads


def safe_data(data: Mapping[str, str]) -> dict[str, str]:
    """Only ids, times and codes leave the broker; anything else is dropped (and logged)."""
    kept: dict[str, str] = {}
    for key, value in data.items():
        if key in _DATA_KEYS or key.endswith(_DATA_SUFFIXES):
            kept[key] = value[:MAX_DATA_VALUE_LENGTH]
        else:
            log.warning("event data key dropped", extra={"key": key})
    return kept


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload(event: Event) -> bytes:
    """The JSON body sent for ``event`` (the same bytes on every attempt)."""
    return msgspec.json.encode(
        {
            "id": event.id,
            "type": event.type,
            "occurred_at": _iso(event.occurred_at),
            "session_id": event.session_id,
            "clinic_id": event.clinic_id,
            "data": event.data,
        }
    )


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return not endpoint.disabled and (
        not endpoint.event_types or event_type in endpoint.event_types
    )


def retry_delay(attempts: int, base: float, cap: float, jitter: float, rand: float) -> float:
    """Seconds to wait after ``attempts`` failed tries: ``base * 2^(attempts-1)`` capped at
    ``cap``, less up to ``jitter`` (a fraction) of it at random (``rand`` in [0, 1))."""
    delay = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 60))
    return delay * (1.0 - jitter * rand)


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


# The outbox (EventSink)


class Outbox:
    """Turns events into durable deliveries; ``wake`` nudges the local worker."""

    def __init__(
        self,
        store: ScheduleStore,
        wake: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._wake = wake
        self._clock = clock

    async def emit(self, event: Event) -> None:
        if event.clinic_id is None:
            return
        endpoints = [
            e for e in await self._store.list_webhooks(event.clinic_id) if subscribed(e, event.type)
        ]
        if not endpoints:
            return
        clean = replace(event, data=safe_data(event.data))
        now = self._clock()
        await self._store.enqueue_deliveries(
            [Delivery(new_id("dlv"), e.id, clean, seq=0, next_attempt_at=now) for e in endpoints]
        )
        log.debug("event queued", extra={"event_id": event.id, "endpoints": len(endpoints)})
        if self._wake is not None:
            self._wake()


# The worker


class WebhookWorker:
    """Sends due deliveries while this node holds the ``webhooks`` lease.

    Use ``start()`` / ``await stop()`` from an aiohttp ``cleanup_ctx``; ``run_once()`` is one
    pass (for tests). Delivery is at least once: a crash between a receiver's 2xx and
    ``mark_delivered`` sends the event again with the same ``webhook-id``.
    """

    def __init__(
        self,
        store: ScheduleStore,
        *,
        node_id: str | None = None,
        poll_interval: float = POLL_SHARED,
        lease_ttl: float = 15.0,
        request_timeout: float = 5.0,
        batch_size: int = 50,
        concurrency: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 3600.0,
        jitter: float = 0.25,
        clock: Callable[[], datetime] = utcnow,
        private_targets: bool = False,
    ) -> None:
        if lease_ttl <= request_timeout * 1.5:
            raise ValueError("lease_ttl must exceed 1.5 * request_timeout")
        self.node_id = node_id or new_id("node")
        self._store = store
        self._poll = poll_interval
        self._ttl = lease_ttl
        self._timeout = request_timeout
        self._batch = batch_size
        self._concurrency = concurrency
        self._base = base_delay
        self._cap = max_delay
        self._jitter = jitter
        self._clock = clock
        self._private = private_targets  # else public addresses only (broker/egress.py)
        self._wakeup = asyncio.Event()
        self._retries: list[datetime] = []  # a heap: when the retries it scheduled fall due
        self._looked_at: datetime | None = None  # the last pass's query time
        self._pass = asyncio.Lock()  # one pass at a time: a delivery is never sent twice at once
        self._stopping = False
        self._held = False
        self._renewed_at = float("-inf")
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def holds_lease(self) -> bool:
        """Whether this node was the sender at its last look (for tests and status pages)."""
        return self._held

    def wake(self) -> None:
        """Deliver now instead of at the next poll (called by ``Outbox.emit``)."""
        self._wakeup.set()

    def start(self) -> None:
        self._stopping = False
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(
                limit=self._concurrency,
                resolver=None if self._private else PublicResolver(),
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
        )
        self._task = asyncio.create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        """Let the current pass finish (bounded by one request timeout), then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self._timeout + 1.0)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _loop(self) -> None:
        while not self._stopping:
            sent = 0
            try:
                sent = await self.run_once()
                if self._failing:
                    log.info("webhook worker recovered", extra={"node_id": self.node_id})
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "webhook pass failed",
                        extra={"node_id": self.node_id, "error": type(exc).__name__},
                    )
                self._failing = True
            if sent == 0 and not self._stopping:
                wait = self._poll if self._failing else self._idle_wait()  # no haste on errors
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                self._wakeup.clear()

    def _idle_wait(self) -> float:
        """Seconds to the next pass with nothing to do: the poll interval, or less when a
        retry this worker scheduled falls due sooner."""
        retries, looked_at = self._retries, self._looked_at
        while retries and looked_at is not None and retries[0] <= looked_at:
            heapq.heappop(retries)  # the last pass found it due
        if not retries:
            return self._poll
        return max(0.0, min(self._poll, (retries[0] - self._clock()).total_seconds()))

    def _retry_at(self, when: datetime) -> datetime:
        heapq.heappush(self._retries, when)
        return when

    async def _renew(self) -> bool:
        """Hold the lease: take or extend it when a third of its time has passed."""
        now = time.monotonic()
        if self._held and now - self._renewed_at < self._ttl / 3:
            return True
        held = await self._store.acquire_lease(LEASE, self.node_id, self._ttl)
        if held != self._held:
            log.info(
                "webhook lease " + ("taken" if held else "lost"), extra={"node_id": self.node_id}
            )
        self._held = held
        self._renewed_at = now if held else float("-inf")
        return held

    async def run_once(self) -> int:
        """One pass: how many due deliveries were handled (0 without the lease)."""
        if self._http is None:
            raise RuntimeError("worker not started")
        async with self._pass:
            return await self._run_pass()

    async def _run_pass(self) -> int:
        if not await self._renew():
            self._retries.clear()  # the lease holder sends them (and polls for them)
            return 0
        self._looked_at = now = self._clock()
        due = await self._store.due_deliveries(now, self._batch)
        if not due:
            return 0
        endpoints = {
            eid: await self._store.get_webhook(eid) for eid in {d.endpoint_id for d in due}
        }
        limit = asyncio.Semaphore(self._concurrency)

        async def one(d: Delivery) -> None:
            async with limit:
                await self._deliver(d, endpoints[d.endpoint_id])

        results = await asyncio.gather(*(one(d) for d in due), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(due)

    async def _deliver(self, d: Delivery, endpoint: WebhookEndpoint | None) -> None:
        ids = {"event_id": d.event.id, "delivery_id": d.id, "endpoint_id": d.endpoint_id}
        now = self._clock()
        if endpoint is None:  # deleted: close the delivery so the line moves on
            await self._store.mark_failed(d.id, d.attempts, now, "endpoint deleted")
            await self._store.mark_delivered(d.id, now)
            log.info("webhook dropped: endpoint deleted", extra=ids)
            return
        if endpoint.disabled:
            later = self._retry_at(now + timedelta(seconds=self._cap))
            await self._store.mark_failed(d.id, d.attempts, later, "endpoint disabled")
            return
        if not await self._renew():  # another node took over; it will send this one
            return
        status, error = await self._post(endpoint, d.event)
        if 200 <= status < 300:
            await self._store.mark_delivered(d.id, self._clock())
            log.info(
                "webhook delivered", extra={**ids, "status": status, "attempt": d.attempts + 1}
            )
            return
        attempts = d.attempts + 1
        delay = retry_delay(attempts, self._base, self._cap, self._jitter, random.random())
        later = self._retry_at(self._clock() + timedelta(seconds=delay))
        await self._store.mark_failed(d.id, attempts, later, error)
        log.warning(
            "webhook delivery failed",
            extra={
                **ids,
                "status": status or None,
                "error": error.split(":", 1)[0],
                "attempts": attempts,
                "retry_in_s": round(delay, 2),
            },
        )

    async def _post(self, endpoint: WebhookEndpoint, event: Event) -> tuple[int, str]:
        """POST one event; (status, error text). Status 0: no HTTP response."""
        assert self._http is not None
        if not self._private and literal_not_public(endpoint.url):
            return 0, NOT_PUBLIC
        body = payload(event)
        headers = {
            "Content-Type": "application/json",
            **signed_headers(endpoint.secret, event.id, int(time.time()), body),
        }
        try:
            async with self._http.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except TimeoutError:
            return 0, "timeout"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            if isinstance(getattr(exc, "os_error", None), NotPublic):
                return 0, NOT_PUBLIC  # the name resolves to private addresses only
            return 0, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
        return status, "" if 200 <= status < 300 else f"HTTP {status}"


# The service behind the REST routes


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
