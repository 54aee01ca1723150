"""One peer's socket: a bounded outbound queue with a single writer task, and a rate limit.

Only the handler task reads from the socket; only the writer task writes to it. A consumer
that lets its queue fill up is disconnected (close 4009) instead of being buffered forever.
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
# Frames after which the socket is closed, and with which code.
_CLOSING = {
    b'"type":"removed"': protocol.CLOSE_REMOVED,
    b'"type":"denied"': protocol.CLOSE_NORMAL,
    b'"type":"session-ended"': protocol.CLOSE_SESSION_ENDED,
    b'"type":"replaced"': protocol.CLOSE_REPLACED,
    b'"type":"reconnect"': protocol.CLOSE_GOING_AWAY,
}


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
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.over = 0
            return True
        self.over += 1
        return False


def closing_code(frame: bytes) -> int | None:
    head = frame[:64]
    for marker, code in _CLOSING.items():
        if marker in head:
            return code
    return None


class Connection:
    """The writing half of one WebSocket, and what the server knows of its peer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        queue_frames: int = QUEUE_FRAMES,
        rate: float = 50.0,
        burst: float = 200.0,
    ) -> None:
        self.ws = ws
        self.peer_id: str | None = None
        self.session_id: str | None = None
        self.subject: str | None = None
        self.last_seq = 0
        self.bucket = TokenBucket(rate, burst)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_frames)
        self._writer: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="ws-writer")

    def push(self, frame: bytes) -> bool:
        """Queue one frame; False (and the socket is closing) when the consumer is too slow."""
        if self.closing:
            return False
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("slow consumer disconnected", extra={"peer_id": self.peer_id})
            self.close_soon(protocol.CLOSE_SLOW_CONSUMER, "too slow")
            return False
        return True

    def push_message(self, message: dict[str, object]) -> bool:
        """Frames that are not replayed (hello phase, errors, pong) get seq 0."""
        return self.push(protocol.stamp_seq(protocol.encode(message), 0))

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])

    async def _write(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None or self.ws.closed:
                    return
                await self.ws.send_frame(frame, WSMsgType.TEXT)  # bytes as they are
                code = closing_code(frame)
                if code is not None:
                    self.closing = True
                    await self._close(code, "closed by the server")
                    return
        except (ConnectionResetError, RuntimeError):
            return  # the socket went away; the handler's reader notices

    async def finish(self, timeout: float = 2.0) -> None:
        """Flush what is queued (bounded time), then stop the writer."""
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
