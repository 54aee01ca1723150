"""The worker that sends due deliveries while its node holds the ``webhooks`` lease."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp

from broker.domain import new_id, utcnow
from broker.egress import NotPublic, PublicResolver, literal_not_public
from broker.scheduling.model import Delivery, Event, WebhookEndpoint
from broker.store.schedule_base import ScheduleStore
from broker.webhooks.events import payload
from broker.webhooks.signing import signed_headers

NOT_PUBLIC = "refused: not a public address"  # the error of a delivery to a private network
# How often an idle worker looks for deliveries nobody told it about: often where several
# nodes share the store (another node's events wake only that node's worker), rarely where it
# is the only one (every event wakes it, and it wakes itself for the retries it schedules).
POLL_SHARED = 0.5
POLL_ALONE = 5.0
LEASE = "webhooks"
USER_AGENT = "CityCall-Webhooks/1"
MAX_ERROR_LENGTH = 200
log = logging.getLogger(__name__)


def retry_delay(attempts: int, base: float, cap: float, jitter: float, rand: float) -> float:
    """Seconds to wait after ``attempts`` failed tries: ``base * 2^(attempts-1)`` capped at
    ``cap``, less up to ``jitter`` (a fraction) of it at random (``rand`` in [0, 1))."""
    delay = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 60))
    return delay * (1.0 - jitter * rand)


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
