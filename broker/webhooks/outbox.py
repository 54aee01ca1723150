"""The outbox: the scheduling ``EventSink`` that turns events into durable deliveries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from broker.domain import new_id, utcnow
from broker.scheduling.model import Delivery, Event
from broker.store.schedule_base import ScheduleStore
from broker.webhooks.events import safe_data, subscribed

log = logging.getLogger(__name__)


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
