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


def make_app() -> web.Application:
    app = web.Application()
    app[PEERS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", ws_handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
