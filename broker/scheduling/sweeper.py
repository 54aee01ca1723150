"""Time-driven changes: starting-soon reminders, no-shows, and closing finished calls.

One node at a time runs it (a store lease), every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from broker.domain import new_id, utcnow
from broker.scheduling import rules
from broker.scheduling.model import SessionKind, SessionStatus
from broker.scheduling.service import EventSink, make_event
from broker.store.base import Store
from broker.store.schedule_base import SessionQuery

log = logging.getLogger(__name__)

STARTING_SOON = "session.starting_soon"
NOSHOW = "session.noshow"
ENDED = "session.ended"


class Sweeper:
    def __init__(
        self,
        store: Store,
        events: EventSink,
        join_before: timedelta,
        join_grace: timedelta,
        remind_before: timedelta,
        interval: float = 15.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._events = events
        self._before = join_before
        self._grace = join_grace
        self._remind = remind_before
        self._interval = interval
        self._clock = clock
        self._node = new_id("node")
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """One pass; returns how many sessions changed or were reminded."""
        now = self._clock()
        changed = 0
        soon = await self._store.list_sessions(
            SessionQuery(
                starts_from=now,
                starts_before=now + self._remind,
                statuses=(SessionStatus.BOOKED,),
                limit=1000,
            )
        )
        for s in soon:
            if await self._store.mark_once(f"reminder:{s.id}:{s.sequence}", 86400):
                await self._events.emit(make_event(STARTING_SOON, s, now))
                changed += 1
        # Windows that have closed: end = closes - grace, so ends_before = now - grace.
        closed = await self._store.list_sessions(
            SessionQuery(
                ends_before=now - self._grace,
                statuses=(SessionStatus.BOOKED, SessionStatus.CHECKED_IN, SessionStatus.ARRIVED),
                limit=1000,
            )
        )
        for s in closed:
            if s.status is SessionStatus.ARRIVED:
                done = rules.transition(s, SessionStatus.FULFILLED, now)
                await self._store.update_session(done)
                await self._events.emit(make_event(ENDED, done, now, reason="window_closed"))
            elif s.kind is SessionKind.CHECKUP:
                missed = replace(rules.transition(s, SessionStatus.NOSHOW, now))
                await self._store.update_session(missed)
                await self._events.emit(make_event(NOSHOW, missed, now))
            else:
                missed = rules.transition(s, SessionStatus.NOSHOW, now)
                await self._store.update_session(missed)
            changed += 1
        return changed

    async def _loop(self) -> None:
        while True:
            try:
                if await self._store.acquire_lease("sweeper", self._node, self._interval * 3):
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
