"""Finding dead sockets: one sweep for all of a node's sockets.

aiohttp's own heartbeat re-arms a timer for every message a socket receives; with a relay's
traffic that is work on every message. Here the socket's reader only counts the frames it
receives (``Intake.frames``, any frame: messages, pongs, pings), and a sweep every quarter
``interval`` looks at the counts: a socket whose count has not moved for ``interval`` seconds
gets a ping frame, and one that then stays silent for another half ``interval`` is closed with
``4013`` (``CLOSE_HEARTBEAT``). Its peer keeps its place for the grace time, as after any drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from signaling import protocol

log = logging.getLogger(__name__)


class Counted(Protocol):
    """What a sweep reads: how many frames a socket has received so far."""

    frames: int


class Pingable(Protocol):
    """What a sweep does to a socket."""

    closing: bool

    def ping(self) -> None: ...
    def close_soon(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class _Watch:
    conn: Pingable
    reader: Counted
    count: int
    heard: float  # when the count last moved (to the sweep's precision)
    pinged: float | None = None


class Heartbeat:
    """The sweep; ``watch`` a socket when it opens, ``forget`` it when it closes."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._watched: dict[int, _Watch] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, conn: Pingable, reader: Counted) -> None:
        self._watched[id(conn)] = _Watch(conn, reader, reader.frames, self._clock())
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    def forget(self, conn: Pingable) -> None:
        self._watched.pop(id(conn), None)

    def sweep(self) -> None:
        """One pass: ping the silent, close those that did not answer."""
        now = self._clock()
        for watch in list(self._watched.values()):
            count = watch.reader.frames
            if count != watch.count:
                watch.count, watch.heard, watch.pinged = count, now, None
            elif watch.conn.closing:
                continue
            elif watch.pinged is not None:
                if now - watch.pinged >= self.interval / 2:
                    log.info("socket silent, closing it")
                    watch.conn.close_soon(protocol.CLOSE_HEARTBEAT, "no pong")
            elif now - watch.heard >= self.interval:
                watch.conn.ping()
                watch.pinged = now

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval / 4)
            try:
                self.sweep()
            except Exception:  # a sweep must not end the sweeping
                log.exception("heartbeat sweep failed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
