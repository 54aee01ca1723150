"""One Redis connection (RESP2) for the bus: an ``asyncio.Protocol``, pipelined.

``Connection`` is an ``asyncio.Protocol`` with a ``hiredis.Reader``. A command is packed, queued
and written together with every other command issued in the same turn of the event loop (one
``transport.write``); its reply resolves the oldest pending future (Redis answers in order).
So concurrent callers pipeline by themselves: there is no pool to run dry, and a burst of
relays costs Redis one read and the node one write. A connection may also carry pushes (a
subscribed connection): replies with no pending future go to ``on_push``, synchronously.
A command may also be sent with its reply unawaited (``RespClient.evalsha_now``, the fast
lane's relays): only a failure is reported, to a callback. While nothing but such replies is
owed, the connection stops reading for ``READ_EVERY`` after each read and then takes them in
bulk: a node relaying thousands of messages a second does not wake up for each reply; an
awaited call ends the pause at once, and a silent server is still found by the reply timeout.
A connection that owes replies and stays silent for ``reply_timeout`` is dropped.

``open_connection`` connects, authenticates and selects the database; every failure to reach
Redis there is ``BusUnavailable``. ``RespClient`` (``signaling.bus.resp``) keeps one such
connection and reconnects it.

Logs name no address and no password, only what failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis

from signaling.bus.base import BusUnavailable, Failed
from signaling.bus.wire import Address, Arg, RespError, pack, reply_error

__all__ = ["Connection", "Push", "Unawaited", "Waiter", "open_connection"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0  # seconds to open a connection (and authenticate)
REPLY_TIMEOUT = 5.0  # seconds a connection may owe replies without answering; then it is dropped
MAX_PENDING = 100_000  # replies one connection may owe before callers are refused
TICK = 0.5  # seconds between checks of a connection's silence
# While only unawaited replies are owed (the fast lane's sends), replies are read this often
# rather than as each arrives: the node wakes up for them in bulk, and an error reply still
# reaches its sender within this time (an awaited call reads at once).
READ_EVERY = 0.02

Push = Callable[[Any], None]


class Waiter(Protocol):
    """What waits for one reply: an ``asyncio.Future``, or an ``Unawaited`` (no one awaits)."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Unawaited:
    """The waiter of a command nobody awaits (``RespClient.evalsha_now``): a reply is dropped,
    an error goes to ``failed``; NOSCRIPT also tells the connection the script is gone."""

    __slots__ = ("_conn", "_failed", "_ref", "_sha")

    def __init__(self, conn: Connection, sha: bytes, failed: Failed, ref: str | None) -> None:
        self._conn, self._sha, self._failed, self._ref = conn, sha, failed, ref

    def done(self) -> bool:
        return False

    def set_result(self, result: Any, /) -> None:
        return None

    def set_exception(self, exception: BaseException, /) -> None:
        if isinstance(exception, RespError) and str(exception).startswith("NOSCRIPT"):
            self._conn.loaded.discard(self._sha)  # SCRIPT FLUSH: awaited calls reload it
            exception = BusUnavailable("redis lost its scripts")
        try:
            error = exception if isinstance(exception, Exception) else BusUnavailable()
            self._failed(self._ref, error)
        except Exception:
            log.exception("redis connection: failure handler failed")


class Connection(asyncio.Protocol):
    """One Redis connection; see the module docstring."""

    def __init__(self, reply_timeout: float = REPLY_TIMEOUT, on_push: Push | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = hiredis.Reader()
        self._pending: deque[Waiter] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._reply_timeout = reply_timeout
        self._tick: asyncio.TimerHandle | None = None
        self._seen, self._stalled = 0, 0.0
        self._awaited = 0  # futures among the pending replies
        self._paused: asyncio.TimerHandle | None = None  # reading paused until this fires
        self.on_push = on_push
        self.after_pushes: Callable[[], None] | None = None  # once a read's pushes are handled
        self.replies = 0  # replies and pushes received so far
        self.loaded: set[bytes] = set()  # SHAs of scripts this connection's server has run
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        self._tick = self._loop.call_later(TICK, self._check)

    def data_received(self, data: bytes) -> None:
        parser, pending = self._parser, self._pending
        parser.feed(data)
        pushed = unawaited = False
        while True:
            try:
                reply = parser.gets()
            except hiredis.ProtocolError:
                log.error("redis connection: malformed reply, dropping the connection")
                self.abort()
                return
            if reply is False:
                if unawaited and not self._awaited:
                    self._pause()  # only the fast lane's replies: read them in bulk
                if pushed and self.after_pushes is not None:
                    try:
                        self.after_pushes()
                    except Exception:
                        log.exception("redis connection: after-push handler failed")
                return
            self.replies += 1
            if pending:
                future = pending.popleft()
                if type(future) is Unawaited:
                    unawaited = True
                else:
                    self._awaited -= 1
                if future.done():
                    continue  # its caller was cancelled
                if type(reply) is hiredis.ReplyError:
                    future.set_exception(reply_error(reply))
                else:
                    future.set_result(reply)
            elif self.on_push is not None:
                pushed = True
                try:
                    self.on_push(reply)
                except Exception:
                    log.exception("redis connection: push handler failed")
            else:
                log.error("redis connection: a reply nobody asked for, dropping the connection")
                self.abort()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._tick is not None:
            self._tick.cancel()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        pending, self._pending = self._pending, deque()
        for future in pending:
            if not future.done():
                future.set_exception(BusUnavailable("redis connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # commands

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def submit(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue one command; the future resolves to its reply."""
        if self._transport is None:
            raise BusUnavailable("redis connection lost")
        if len(self._pending) >= MAX_PENDING:
            raise BusUnavailable("redis is not keeping up")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append(future)
        self._awaited += 1
        if self._paused is not None:
            self._resume()  # someone waits: read as soon as the reply is there
        self._write(pack(tuple(args)))
        return future

    def submit_unawaited(self, command: bytes, waiter: Waiter) -> None:
        """Queue one packed command whose reply goes to ``waiter`` (in the reading callback)."""
        if self._transport is None:
            raise BusUnavailable("redis connection lost")
        if len(self._pending) >= MAX_PENDING:
            raise BusUnavailable("redis is not keeping up")
        self._pending.append(waiter)
        self._write(command)

    def send_nowait(self, args: Sequence[Arg]) -> None:
        """Queue a command whose answer comes as a push (SUBSCRIBE, PING when subscribed)."""
        if self._transport is None:
            raise BusUnavailable("redis connection lost")
        self._write(pack(tuple(args)))

    def _write(self, command: bytes) -> None:
        out = self._out
        out.append(command)
        if len(out) == 1:  # the first of this turn: flush once the turn's callers are done
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _pause(self) -> None:
        transport = self._transport
        if self._paused is None and transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._paused = self._loop.call_later(READ_EVERY, self._resume)

    def _resume(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def _check(self) -> None:
        """Drop a connection that owes replies and has been silent for ``reply_timeout``."""
        if self._transport is None:
            return
        if self._paused is not None:
            pass  # not reading for a moment: silence proves nothing
        elif self._pending and self.replies == self._seen:
            self._stalled += TICK
            if self._stalled >= self._reply_timeout:
                log.warning("redis connection: no reply for %.1fs, dropping it", self._stalled)
                self.abort()
                return
        else:
            self._seen, self._stalled = self.replies, 0.0
        self._tick = self._loop.call_later(TICK, self._check)


async def open_connection(
    address: Address,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    reply_timeout: float = REPLY_TIMEOUT,
    select: bool = True,
) -> Connection:
    """Connect, authenticate and (``select``) choose the database, or ``BusUnavailable``."""
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            if address.path is not None:
                _, conn = await loop.create_unix_connection(
                    lambda: Connection(reply_timeout), address.path
                )
            else:
                _, conn = await loop.create_connection(
                    lambda: Connection(reply_timeout), address.host or "127.0.0.1", address.port
                )
            hello: list[asyncio.Future[Any]] = []
            if address.password is not None:
                user = [address.username] if address.username else []
                hello.append(conn.submit(["AUTH", *user, address.password]))
            if select and address.db:
                hello.append(conn.submit(["SELECT", address.db]))
            for future in hello:
                await future
    except (OSError, TimeoutError, RespError) as exc:
        if conn is not None:
            conn.abort()
        raise BusUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
    except BaseException:
        if conn is not None:
            conn.abort()
        raise
    return conn
