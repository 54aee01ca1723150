"""``broker serve`` with what-if changes patched in at start-up, to size suggested changes
before anyone makes them (the patches live here only; the broker's code is not touched):

    python -m bench.broker_variant --patch uvloop,sdp,send-bytes,recv-bytes -- serve --port ...

* ``uvloop``: the uvloop event loop (``uvloop.install()`` before ``web.run_app``); ``broker
  serve`` itself runs on uvloop since commit 61dac8f, so this only matters for older commits;
* ``no-uvloop``: the default asyncio loop even where ``broker serve`` asks for uvloop;
* ``sdp``: ``protocol.check_sdp`` as one compiled regex over the whole SDP instead of one match
  per line (the same rules: starts ``v=0``, every non-empty line ``x=...``, an ``m=`` line);
* ``send-bytes``: the writer task sends the encoded frame with ``ws.send_frame(frame, TEXT)``
  instead of ``ws.send_str(frame.decode())`` (no decode + re-encode per frame);
* ``recv-bytes``: sockets made with ``decode_text=False``, so text frames reach
  ``protocol.parse`` as bytes (no UTF-8 decode in aiohttp + re-encode in ``parse``; msgspec
  still rejects invalid UTF-8); ``sdp``, ``send-bytes`` and ``recv-bytes`` are what commit
  c82b7ea did, so they only matter for older commits;
* ``no-ring-pending``: ``Rooms.ring_pending`` does nothing (no store query on an idle ``hello``;
  TVs coming online during a call are not rung), to price that query;
* ``no-gc``: ``gc.disable()``: no cyclic garbage collection at all (a bound on what
  collection passes cost the relay; not something to run for long);
* ``gc-refreeze``: after every full collection, ``gc.freeze()`` what survived it, so the next
  full pass walks only what is newer (the broker freezes once, after start-up);
* ``gc-log``: collections timed, their count, total and longest per generation printed at
  exit (in the variant's log);
* ``replay-16``: each peer's replay buffer keeps 16 frames instead of 256 (does cycling a
  bigger buffer through memory cost the relay anything?);
* ``switch-1ms``: ``sys.setswitchinterval(0.001)``: the SQLite thread gets the GIL back after
  at most 1 ms instead of 5 ms while the event loop is busy (join latency).

``bench.relay --variant uvloop,sdp`` (and ``bench.join_latency --variant ...``) runs such a
broker as a third server in the same run.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

PATCHES = (
    "uvloop",
    "no-uvloop",
    "sdp",
    "send-bytes",
    "recv-bytes",
    "switch-1ms",
    "no-ring-pending",
    "no-gc",
    "gc-refreeze",
    "gc-log",
    "replay-16",
)

# Same rules as protocol.check_sdp (lines end in \n or \r\n, blank lines allowed): a line
# that is neither blank nor ``x=...``. One search that only stops at newlines: ~1 us for 4 KB.
_BAD_LINE = re.compile(r"\n(?![a-z]=|\r?\n|\Z)")
_START = re.compile(r"v=0\r?\n")


def patch_sdp() -> None:
    from signaling import protocol

    def check_sdp(sdp: str, ref: str | None = None) -> None:
        if not _START.match(sdp):
            raise protocol.ProtocolError(protocol.INVALID_SDP, "SDP must start with v=0", ref)
        if _BAD_LINE.search(sdp) is not None:
            raise protocol.ProtocolError(
                protocol.INVALID_SDP, "SDP lines must look like x=value", ref
            )
        if "\nm=" not in sdp:
            raise protocol.ProtocolError(protocol.INVALID_SDP, "SDP has no media section", ref)

    protocol.check_sdp = check_sdp


def patch_send_bytes() -> None:
    from aiohttp import WSMsgType

    from signaling import connection

    async def _write(self: Any) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None or self.ws.closed:
                    return
                await self.ws.send_frame(frame, WSMsgType.TEXT)
                code = connection.closing_code(frame)
                if code is not None:
                    self.closing = True
                    await self._close(code, "closed by the server")
                    return
        except (ConnectionResetError, RuntimeError):
            return

    connection.Connection._write = _write  # type: ignore[method-assign]


def patch_recv_bytes() -> None:
    from aiohttp import web

    from signaling import handler

    class BytesWebSocketResponse(web.WebSocketResponse):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("decode_text", False)
            super().__init__(**kwargs)

    class _Web:
        def __getattr__(self, name: str) -> Any:
            return BytesWebSocketResponse if name == "WebSocketResponse" else getattr(web, name)

    handler.web = _Web()  # type: ignore[assignment]


def patch_gc(*, refreeze: bool, report: bool) -> None:
    """``gc-refreeze``: after every full collection, freeze what survived it; ``gc-log``: time
    each collection and print count, total and longest per generation at exit."""
    import atexit
    import gc
    import time

    stats: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        stats[info["generation"]].append(time.perf_counter() - started[0])
        if refreeze and info["generation"] == 2:
            gc.freeze()

    gc.callbacks.append(on_gc)
    if report:

        def show() -> None:
            for gen, times in stats.items():
                if times:
                    print(
                        f"gc gen{gen}: {len(times)} passes, {sum(times) * 1e3:.1f} ms in all, "
                        f"longest {max(times) * 1e3:.1f} ms",
                        flush=True,
                    )

        atexit.register(show)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", default="", help=f"comma-separated: {', '.join(PATCHES)}")
    parser.add_argument("broker_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    chosen = [p for p in args.patch.split(",") if p]
    unknown = set(chosen) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown patch(es): {', '.join(sorted(unknown))}")
    if "no-ring-pending" in chosen:
        from signaling import rooms

        async def ring_pending(self: Any, user_id: str, idle_peer: str) -> None:
            return None

        rooms.Rooms.ring_pending = ring_pending  # type: ignore[method-assign]
    if "no-gc" in chosen:
        import gc

        gc.disable()
    if "gc-refreeze" in chosen or "gc-log" in chosen:
        patch_gc(refreeze="gc-refreeze" in chosen, report="gc-log" in chosen)
    if "switch-1ms" in chosen:
        sys.setswitchinterval(0.001)
    if "replay-16" in chosen:
        from signaling.bus import memory

        memory.REPLAY_LIMIT = 16
    if "uvloop" in chosen:
        import uvloop

        uvloop.install()
    if "no-uvloop" in chosen:
        import asyncio

        import uvloop

        uvloop.new_event_loop = asyncio.new_event_loop
    if "sdp" in chosen:
        patch_sdp()
    if "send-bytes" in chosen:
        patch_send_bytes()
    if "recv-bytes" in chosen:
        patch_recv_bytes()
    print(f"broker variant: {', '.join(chosen) or 'no patches'}", flush=True)
    from broker.cli import main as broker_main

    rest = [a for a in args.broker_args if a != "--"]
    sys.exit(broker_main(rest))


if __name__ == "__main__":
    main()
