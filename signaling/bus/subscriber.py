"""``Subscriber``: one Redis channel read on a connection of its own, messages handed on at once.

The connection's protocol callback parses the pushes (``hiredis``) and calls ``on_message``
for each message synchronously, in the order Redis published them: no task, no queue, no
timeout per message; ``after_messages`` once the messages of one read are handed on. While
the owner resyncs (``hold``, and from the subscription on until
its first resync is done), messages are kept and handed on when the hold ends, after what the
resync delivered. The owner's chores (pinging an idle
subscription, the claim refresh) run in ``watch``, in the owner's task, between pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from signaling.bus.base import BusUnavailable
from signaling.bus.resp import Connection, RespClient
from signaling.bus.wire import RespError

__all__ = ["INVALIDATE", "PING_EVERY", "Subscriber"]

INVALIDATE = b"__redis__:invalidate"  # the channel of client-side caching invalidations
PING_EVERY = 5.0  # an idle subscription is pinged this often; silent for 3x: it is dropped
SUBSCRIBE_TIMEOUT = 5.0  # seconds to wait for Redis to confirm the subscription


class Subscriber:
    """One subscription of ``channel``; ``subscribe`` it once, ``close`` it when done."""

    def __init__(
        self,
        client: RespClient,
        channel: str,
        on_message: Callable[[bytes], None],
        on_invalidate: Callable[[list[bytes] | None], None] | None = None,
        *,
        after_messages: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._channel = channel.encode()
        self._on_message = on_message
        self._on_invalidate = on_invalidate
        self._after_messages = after_messages
        self._handed = False  # a message was handed on in this read
        self._conn: Connection | None = None
        self._confirmed: asyncio.Future[None] | None = None
        self._waiting_for: set[bytes] = set()
        self._held: list[bytes] | None = None
        self.client_id: int | None = None  # with on_invalidate: the id to redirect tracking to

    @property
    def is_open(self) -> bool:
        return self._conn is not None and self._conn.is_open

    async def subscribe(self) -> None:
        """Connect and subscribe; returns once Redis confirmed it (else ``BusUnavailable``).
        Messages are held until the first ``hold`` ends. With ``on_invalidate``, the
        connection also receives client-side caching invalidations (``__redis__:invalidate``,
        a list of keys, or None for all), handed on at once, even while held."""
        self._confirmed = asyncio.get_running_loop().create_future()
        self._held = []
        self._conn = await self._client.open(self._on_push)
        if self._after_messages is not None:
            self._conn.after_pushes = self._after_read
        channels = [self._channel]
        if self._on_invalidate is not None:
            try:
                self.client_id = int(await self._conn.submit([b"CLIENT", b"ID"]))
                channels.append(INVALIDATE)
            except RespError:  # not allowed (ACL): no invalidations, no caching
                self.client_id = None
        self._waiting_for = set(channels)
        self._conn.send_nowait([b"SUBSCRIBE", *channels])
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.wait(
                    [self._confirmed, self._conn.closed], return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            raise BusUnavailable("redis did not confirm the subscription") from None
        if not self._confirmed.done():
            raise BusUnavailable("subscription lost")

    def _on_push(self, push: Any) -> None:
        if type(push) is list and len(push) == 3:
            kind = push[0]
            if kind == b"message":
                if push[1] == INVALIDATE:
                    if self._on_invalidate is not None:
                        self._on_invalidate(push[2])
                elif self._held is None:
                    self._handed = True
                    self._on_message(push[2])
                else:
                    self._held.append(push[2])
                return
            if kind == b"subscribe":
                self._waiting_for.discard(push[1])
                if not self._waiting_for and self._confirmed and not self._confirmed.done():
                    self._confirmed.set_result(None)
                return
        # pongs (["pong", ""]) and anything else only prove the connection alive

    def _after_read(self) -> None:
        if self._handed and self._after_messages is not None:
            self._handed = False
            self._after_messages()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the messages that arrive meanwhile; hand them on, in order, at the end.

        A new subscription holds from the start (messages published while it was down reach the
        owner only through its resync, which must come first), until its first hold ends. If
        the body fails, nothing is handed on and the subscription stays held: the owner is to
        close it and resync on a new one (handing on later frames would skip the missing ones).
        """
        if self._held is None:
            self._held = []
        try:
            yield
        except BaseException:
            self._held = []
            raise
        held, self._held = self._held, None
        for data in held:
            self._on_message(data)

    async def watch(self, every: float, chore: Callable[[], Awaitable[None]]) -> None:
        """Until the subscription is lost (then ``BusUnavailable``): ping it when idle, drop it
        when silent for ``3 * PING_EVERY``, and run ``chore`` every ``every`` seconds."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("subscribe first")
        loop = asyncio.get_running_loop()
        seen, last_seen = conn.replies, loop.time()
        last_ping = last_seen
        next_chore = last_seen + every
        while True:
            wait = max(0.0, min(PING_EVERY, next_chore - loop.time()))
            await asyncio.wait([conn.closed], timeout=wait)
            if conn.closed.done():
                raise BusUnavailable("subscription lost")
            now = loop.time()
            if conn.replies != seen:
                seen, last_seen = conn.replies, now
            elif now - last_seen > 3 * PING_EVERY:
                raise BusUnavailable("no answer to PING")
            elif now - max(last_seen, last_ping) >= PING_EVERY:
                last_ping = now
                conn.send_nowait([b"PING"])
            if now >= next_chore:
                next_chore = now + every
                await chore()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.abort()
