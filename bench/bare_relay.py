"""The baseline: a bare aiohttp WebSocket relay, written the plain way.

Default asyncio event loop, stdlib ``json``, no auth, no validation, no queues. A client says
``{"type": "hello", "peer": "<id>"}`` and gets ``{"type": "welcome", "peer_id": "<id>"}``;
after that every message ``{"type": ..., "to": "<peer>", ...}`` is parsed, stamped with
``from`` (``to`` removed) and sent to the named peer from the sender's handler task.

    python -m bench.bare_relay --port 9000
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

PEERS = web.AppKey("peers", dict[str, web.WebSocketResponse])


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    peers = request.app[PEERS]
    me: str | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if me is None:
                if data.get("type") == "hello" and isinstance(data.get("peer"), str):
                    me = data["peer"]
                    peers[me] = ws
                    await ws.send_str(json.dumps({"type": "welcome", "peer_id": me}))
                continue
            target = peers.get(data.pop("to", None))
            if target is None:
                await ws.send_str(json.dumps({"type": "error", "code": "unknown_peer"}))
                continue
            data["from"] = me
            await target.send_str(json.dumps(data))
    finally:
        if me is not None and peers.get(me) is ws:
            del peers[me]
    return ws


Handler = Callable[[web.Request], Awaitable[web.WebSocketResponse]]


def make_app(handler: Handler = ws_handler) -> web.Application:
    app = web.Application()
    app[PEERS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", handler)
    return app


def serve(doc: str, handler: Handler, port: int) -> None:
    """Run a relay app with ``handler`` at ``/ws``; ``--host``/``--port`` from the command line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args()
    web.run_app(make_app(handler), host=args.host, port=args.port, print=None, access_log=None)


def main() -> None:
    serve(__doc__, ws_handler, 9000)


if __name__ == "__main__":
    main()
