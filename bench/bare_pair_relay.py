"""The two-process baseline: the bare relay (``bench.bare_relay``) run as two processes that
forward to each other, written the plain way. No Redis, no rooms, no replay buffer.

Each process serves its own peers. A message for a peer it does not hold goes, stamped with
``from``, as one line ``<to> <json>`` over one TCP link to the other process, which parses it
with stdlib ``json`` and sends it to its peer. One process listens for the link
(``--link-listen PORT``), the other connects to it (``--link-connect PORT``): start the
listening one first.

This is the floor of any design in which a message crosses two server processes: what the
benchmark's "two nodes within 2x one node" costs before any shared store is added
(``bench.two_nodes --baseline``).

    python -m bench.bare_pair_relay --port 9000 --link-listen 9100
    python -m bench.bare_pair_relay --port 9001 --link-connect 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import WSMsgType, web

from bench.bare_relay import PEERS, healthz

LINK = web.AppKey("link", list[asyncio.StreamWriter])


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    peers = request.app[PEERS]
    link = request.app[LINK]
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
            to = data.pop("to", None)
            data["from"] = me
            target = peers.get(to)
            if target is not None:
                await target.send_str(json.dumps(data))
            elif link and isinstance(to, str):
                link[0].write(f"{to} {json.dumps(data)}\n".encode())
            else:
                await ws.send_str(json.dumps({"type": "error", "code": "unknown_peer"}))
    finally:
        if me is not None and peers.get(me) is ws:
            del peers[me]
    return ws


async def read_link(app: web.Application, reader: asyncio.StreamReader) -> None:
    """Deliver each line from the other process to the peer it names."""
    peers = app[PEERS]
    while line := await reader.readline():
        to, _, body = line.decode().partition(" ")
        target = peers.get(to)
        if target is not None:
            await target.send_str(json.dumps(json.loads(body)))


def make_app(listen: int | None, connect: int | None) -> web.Application:
    app = web.Application()
    app[PEERS] = {}
    app[LINK] = []
    up = asyncio.Event()

    kept: list[object] = []  # the link's server or reader task, kept from the collector

    async def on_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        app[LINK].append(writer)
        await read_link(app, reader)

    async def start_link(app: web.Application) -> None:
        if listen is not None:
            kept.append(await asyncio.start_server(on_link, "127.0.0.1", listen))
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", connect)
            app[LINK].append(writer)
            kept.append(asyncio.create_task(read_link(app, reader)))
        up.set()

    async def ready(request: web.Request) -> web.Response:
        if not up.is_set():
            raise web.HTTPServiceUnavailable()
        return await healthz(request)

    app.on_startup.append(start_link)
    app.router.add_get("/healthz", ready)
    app.router.add_get("/ws", ws_handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--link-listen", type=int, metavar="PORT")
    side.add_argument("--link-connect", type=int, metavar="PORT")
    args = parser.parse_args()
    app = make_app(args.link_listen, args.link_connect)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
