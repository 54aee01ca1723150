"""The socket's read side, with a fast lane for relayed messages.

aiohttp parses WebSocket frames in its reader (C) and queues each message for the handler
task, which wakes up once per message (``ws.receive()``). For the messages that make up most
of the traffic (``offer``, ``answer``, ``candidate`` between two peers of a call on one node)
that wake-up and the task switch cost more than relaying the message itself. ``Intake`` is the
queue the reader feeds: it offers every text message to a *fast lane* first, a plain function
that may handle it right there, in the read callback; anything it does not take (every other
message, and everything while the handler task is busy or has messages waiting, so order is
kept) is queued for the handler task as usual.

This reaches into aiohttp's reader (``aiohttp._websocket.reader``) and mirrors
``WebSocketResponse._post_start``; both are checked at import: when they are not what this
module knows, ``FastWebSocketResponse`` is plain ``WebSocketResponse`` and every message goes
through the handler task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from signaling.connection import Batch

log = logging.getLogger(__name__)

# A fast lane: given a text message's bytes, True when it handled it (nothing to queue).
FastLane = Callable[[bytes], bool]

try:  # aiohttp internals, checked: see the module docstring
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE
    from aiohttp.http import WSMsgType

    AVAILABLE = hasattr(web.WebSocketResponse, "_post_start") and hasattr(
        WebSocketDataQueue, "feed_data"
    )
except ImportError:  # pragma: no cover - another aiohttp
    AVAILABLE = False


if AVAILABLE:

    class Intake(WebSocketDataQueue):
        """aiohttp's message queue, with a fast lane in front of it."""

        lane: FastLane | None = None
        busy: bool = False  # the handler task is working on a message
        frames: int = 0  # every frame received (signaling/heartbeat.py watches it)

        def feed_data(self, data: Any, size: int) -> None:
            self.frames += 1
            lane = self.lane
            if (
                lane is not None
                and not self.busy
                and data[0] is WSMsgType.TEXT
                and not self._buffer
                and lane(data[1])
            ):
                return
            super().feed_data(data, size)

    class _Chunked:
        """aiohttp's frame parser, with the batch of writes open while it handles a read."""

        def __init__(self, parser: Any, batch: Batch) -> None:
            self._parser = parser
            self._batch = batch

        def feed_data(self, data: bytes) -> Any:
            batch = self._batch
            batch.open = True
            try:
                return self._parser.feed_data(data)
            finally:
                batch.open = False
                batch.flush()

        def feed_eof(self) -> Any:
            return self._parser.feed_eof()

    class FastWebSocketResponse(web.WebSocketResponse):
        """A ``WebSocketResponse`` whose reader feeds an ``Intake``; with a ``batch``, what
        the fast lane writes while one read is handled goes out when that read is done."""

        def __init__(self, *, batch: Batch | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._batch = batch

        def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
            self._ws_protocol = protocol
            self._writer = writer
            self._reset_heartbeat()
            loop = self._loop
            assert loop is not None
            self._reader = Intake(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
            self._parser = WebSocketReader(
                self._reader,
                self._max_msg_size,
                compress=bool(self._compress),
                decode_text=self._decode_text,
            )
            cb = None if self._heartbeat is None else self._on_data_received
            parser = self._parser if self._batch is None else _Chunked(self._parser, self._batch)
            request.protocol.set_parser(parser, data_received_cb=cb)
            request.protocol.keep_alive(False)

        @property
        def intake(self) -> Intake | None:
            reader = self._reader
            return reader if isinstance(reader, Intake) else None

else:  # pragma: no cover - another aiohttp

    class FastWebSocketResponse(web.WebSocketResponse):  # type: ignore[no-redef]
        def __init__(self, *, batch: Any = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)

        @property
        def intake(self) -> Any:
            return None
