"""One peer's socket: its writing half (a bounded outbound queue behind one writer), and a
rate limit.

Only the handler task reads from the socket; only the ``Connection`` writes to it. A frame
pushed while nothing is queued and the kernel takes what it is given (the transport holds
less than ``WRITE_BUFFER`` bytes) is written at once, in the caller's turn of the event loop:
a relayed message costs no task wake-up. Otherwise it joins the queue, which the writer task
drains, waiting for the socket to take it. Frames go out in the order pushed either way. A
consumer that lets the queue fill up is disconnected (close 4009) instead of being buffered
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from signaling import protocol

log = logging.getLogger(__name__)

QUEUE_FRAMES = 512
WRITE_BUFFER = 64 * 1024  # bytes the transport may hold for a frame to be written at once
# Frames after which the socket is closed, and with which code (by the first letter of their
# type, then the whole type: relayed messages never start with these letters).
_CLOSING = {
    b"removed": protocol.CLOSE_REMOVED,
    b"denied": protocol.CLOSE_NORMAL,
    b"session-ended": protocol.CLOSE_SESSION_ENDED,
    b"replaced": protocol.CLOSE_REPLACED,
    b"reconnect": protocol.CLOSE_GOING_AWAY,
}
_CLOSING_FIRST = frozenset(t[0] for t in _CLOSING)
_TYPE_KEY = b'"type":"'
_TYPE_AT = len(_TYPE_KEY)
_PING = b"\x89\x00"  # a final ping frame without payload (RFC 6455 5.5.2)
_HEADER_16 = b"\x81\x7e"  # a final text frame whose length follows in 16 bits
_HEADERS_7 = tuple(bytes((0x81, n)) for n in range(126))  # final text frames of 0-125 bytes


@dataclass(slots=True)
class TokenBucket:
    """``rate`` messages per second on average, bursts up to ``burst``. Pure, clock given."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0
    over: int = field(default=0)  # messages refused in a row

    def allow(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1:
            self.tokens = tokens - 1
            self.over = 0
            return True
        self.tokens = tokens
        self.over += 1
        return False

    def refund(self) -> None:
        """Give back the token of the last allowed message (it is counted again later)."""
        self.tokens = min(self.burst, self.tokens + 1)


def closing_code(frame: bytes) -> int | None:
    """The close code that follows ``frame``, if it is a final message.

    Server frames are ``{"seq":N,"type":"...",...}`` or ``{"type":"...",...}``.
    """
    start = frame.find(_TYPE_KEY, 0, 32) + _TYPE_AT
    if start < _TYPE_AT or start >= len(frame) or frame[start] not in _CLOSING_FIRST:
        return None
    end = frame.find(b'"', start, start + 16)
    return _CLOSING.get(frame[start:end]) if end > 0 else None


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame (RFC 6455 5.2) of ``length`` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


@dataclass(slots=True)
class Batch:
    """Writes held back while one read is handled (``open``): the reader flushes them when
    it is done with what it read (signaling/intake.py), in one write per socket, instead of
    each socket scheduling its own flush for the next turn of the event loop."""

    open: bool = False
    pending: list[Connection] = field(default_factory=list)

    def flush(self) -> None:
        pending = self.pending
        while pending:
            pending.pop()._flush()

    def hold_for_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the batch until the next turn of the loop, for a caller with no end of read
        to flush at (frames from the bus): one scheduled flush for all sockets it writes to,
        rather than one each."""
        if not self.open:
            self.open = True
            loop.call_soon(self.end)

    def end(self) -> None:
        """Close the batch and write what it holds (a reader done with its read)."""
        self.open = False
        self.flush()


class Connection:
    """The writing half of one WebSocket, and what the server knows of its peer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        queue_frames: int = QUEUE_FRAMES,
        rate: float = 50.0,
        burst: float = 200.0,
        transport: asyncio.Transport | None = None,
        batch: Batch | None = None,
    ) -> None:
        self.ws = ws
        self._batch = batch if batch is not None else Batch()
        # Frames are written straight to the transport only without permessage-deflate.
        self._transport = transport if not ws.compress else None
        self.peer_id: str | None = None
        self.session_id: str | None = None
        self.subject: str | None = None
        self.last_seq = 0
        self.bucket = TokenBucket(rate, burst)
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []  # headers and frames for this turn's flush
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_frames)
        self._writer: asyncio.Task[None] | None = None
        self._slow = self._transport is None  # frames go through the queue and the writer
        self.closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="ws-writer")

    def push(self, frame: bytes) -> bool:
        """Send one frame; False (and the socket is closing) when the consumer is too slow."""
        if self.closing:
            return False
        size = len(frame)
        if self._slow:
            try:
                self._queue.put_nowait(frame)
            except asyncio.QueueFull:
                log.warning("slow consumer disconnected", extra={"peer_id": self.peer_id})
                self.close_soon(protocol.CLOSE_SLOW_CONSUMER, "too slow")
                return False
        else:
            out = self._out
            if size < 126:
                out.append(_HEADERS_7[size])
            elif size < 65536:
                out.append(_HEADER_16 + size.to_bytes(2, "big"))
            else:
                out.append(frame_header(size))
            out.append(frame)
            if len(out) == 2:
                batch = self._batch
                if batch.open:
                    batch.pending.append(self)
                else:
                    self._loop.call_soon(self._flush)
        at = frame.find(_TYPE_KEY, 0, 32) + _TYPE_AT  # closing_code, its quick part inline
        if at >= _TYPE_AT and at < size and frame[at] in _CLOSING_FIRST:
            code = closing_code(frame)
            if code is not None:
                self.close_soon(code, "closed by the server")
        return True

    def ping(self) -> None:
        """A ping frame (control frames may go between any two frames)."""
        transport = self._transport
        if transport is not None:
            if not transport.is_closing():
                transport.write(_PING)
        elif not self.closing:
            self._loop.create_task(self._ping())

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.ping()

    def push_message(self, message: dict[str, object]) -> bool:
        """Frames that are not replayed (hello phase, errors, pong) get seq 0."""
        return self.push(protocol.stamp_seq(protocol.encode(message), 0))

    def _flush(self) -> None:
        """Write what this turn of the event loop pushed, in one write."""
        out, transport = self._out, self._transport
        if not out or transport is None:
            return
        data = b"".join(out)
        out.clear()
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > WRITE_BUFFER:
            self._slow = True  # the socket is not keeping up: queue until it has drained

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self._loop.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None and self._slow:
            # Frames queued before the close go first (bounded: the writer stops on a closed
            # socket, and finish() cancels it after its timeout).
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 2.0)
        self._flush()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 5.0)
        except TimeoutError:
            # The peer does not read (its buffers are full): the close frame cannot go out.
            if self._transport is not None:
                self._transport.abort()
        except Exception:
            log.debug("close failed", extra={"peer_id": self.peer_id})

    async def _write(self) -> None:
        """Send what the queue holds while the socket is slow; then hand back to ``push``."""
        try:
            while True:
                transport = self._transport
                if (
                    self._queue.empty()
                    and transport is not None
                    and transport.get_write_buffer_size() <= WRITE_BUFFER
                ):
                    self._slow = False
                frame = await self._queue.get()
                if frame is None or self.ws.closed:
                    return
                await self.ws.send_frame(frame, WSMsgType.TEXT)  # bytes as they are
        except (ConnectionResetError, RuntimeError):
            return  # the socket went away; the handler's reader notices

    async def finish(self, timeout: float = 2.0) -> None:
        """Flush what is pending (bounded time), then stop the writer."""
        self._flush()
        if self._writer is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


def monotonic() -> float:
    return time.monotonic()
