"""A lean asyncio Redis client (RESP2) for the bus: one persistent connection, pipelined.

``RespClient`` keeps one command connection (a ``Connection`` of ``signaling.bus.resp_connection``,
which pipelines the commands and reads their replies) and reconnects on demand with backoff:
while the server is down, calls fail at once with ``BusUnavailable`` (no hang, no pool wait) and
a new connection is tried after a growing pause (``RECONNECT_MIN`` to ``RECONNECT_MAX``). Every
failure to reach Redis (refused, reset, no reply within ``reply_timeout``, the server loading its
data set) is ``BusUnavailable``; an error reply of Redis itself is ``RespError``. ``evalsha``
loads a script the server does not know yet (NOSCRIPT); ``evalsha_now`` and ``prepared_now``
write a command whose reply nobody awaits (the fast lane's relays).

``Connection`` and ``open_connection`` are re-exported here, so the bus imports the client and
its connection from one place.

Logs name no address and no password, only what failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Sequence
from typing import Any

from signaling.bus.base import BusUnavailable, Failed
from signaling.bus.resp_connection import (
    CONNECT_TIMEOUT,
    REPLY_TIMEOUT,
    Connection,
    Push,
    Unawaited,
    open_connection,
)
from signaling.bus.wire import Arg, Prepared, RespError, Script, pack, parse_url

__all__ = ["Connection", "RespClient", "open_connection"]

log = logging.getLogger(__name__)

RECONNECT_MIN, RECONNECT_MAX = 0.05, 2.0  # pause after a failed connect, doubling up to the max


class RespClient:
    """Commands over one shared connection, reconnected on demand; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.address = parse_url(url)
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._conn: Connection | None = None
        self._connecting: asyncio.Future[Connection] | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._closed = False

    def call(self, *args: Arg) -> Awaitable[Any]:
        """Run one command; its reply (bytes, int, list, None). Pipelined with the others."""
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn.submit(args)
        return self._call_connected(args)

    def current(self) -> Connection | None:
        """The open command connection, if there is one now (no connect attempt)."""
        conn = self._conn
        return conn if conn is not None and conn.is_open else None

    async def _call_connected(self, args: Sequence[Arg]) -> Any:
        conn = await self.connection()
        return await conn.submit(args)

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` (``EVALSHA``; ``EVAL`` when the server does not know it yet)."""
        conn = self.current() or await self.connection()
        try:
            reply = await conn.submit((b"EVALSHA", script.sha, len(keys), *keys, *args))
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            reply = await conn.submit((b"EVAL", script.source, len(keys), *keys, *args))
        conn.loaded.add(script.sha)  # the server this connection reaches has it now
        return reply

    def evalsha_now(
        self,
        script: Script,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        failed: Failed,
        ref: str | None = None,
    ) -> bool:
        """Write ``script``'s ``EVALSHA`` now, its reply unawaited: an error reply (or a lost
        connection) goes to ``failed(ref, exc)``, in the reading callback. False, and nothing
        written, when there is no open connection or its server has not run the script yet
        (then ``evalsha`` loads it): an ``EVALSHA`` answered NOSCRIPT and retried as ``EVAL``
        after later commands would reorder them. ``BusUnavailable`` when too many replies are
        owed."""
        conn = self._conn
        if conn is None or not conn.is_open or script.sha not in conn.loaded:
            return False
        command = pack((b"EVALSHA", script.sha, len(keys), *keys, *args))
        conn.submit_unawaited(command, Unawaited(conn, script.sha, failed, ref))
        return True

    def prepared_now(
        self, prepared: Prepared, arg: bytes, failed: Failed, ref: str | None = None
    ) -> bool:
        """``evalsha_now`` of a ``Prepared`` command, with ``arg`` in its place."""
        conn, sha = self._conn, prepared.script.sha
        if conn is None or not conn.is_open or sha not in conn.loaded:
            return False
        conn.submit_unawaited(prepared.command(arg), Unawaited(conn, sha, failed, ref))
        return True

    async def connection(self) -> Connection:
        """The open connection; opens one unless a recent attempt failed (then backs off)."""
        if self._closed:
            raise BusUnavailable("the redis client is closed")
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise BusUnavailable("redis is unreachable (waiting to retry)")
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            conn = await open_connection(
                self.address,
                connect_timeout=self.connect_timeout,
                reply_timeout=self.reply_timeout,
            )
        except BusUnavailable as exc:
            self._delay = min(max(self._delay * 2, RECONNECT_MIN), RECONNECT_MAX)
            self._retry_at = loop.time() + self._delay * random.uniform(0.5, 1.0)
            log.warning("redis client: %s, next try in up to %.2fs", exc, self._delay)
            raise
        finally:
            self._connecting = None
        if self._closed:
            conn.abort()
            raise BusUnavailable("the redis client is closed")
        self._delay = 0.0
        self._conn = conn
        return conn

    async def open(self, on_push: Push) -> Connection:
        """A connection of its own for pushes (a subscription); the caller closes it."""
        if self._closed:
            raise BusUnavailable("the redis client is closed")
        conn = await open_connection(
            self.address,
            connect_timeout=self.connect_timeout,
            reply_timeout=self.reply_timeout,
            select=False,
        )
        conn.on_push = on_push
        return conn

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with_timeout = asyncio.wait_for(asyncio.shield(conn.closed), 1.0)
            try:
                await with_timeout
            except TimeoutError:
                conn.abort()


def _retrieve(future: asyncio.Future[Connection]) -> None:
    """Mark a connect attempt's failure as seen (its callers may all have gone)."""
    if not future.cancelled():
        future.exception()
