"""The two-process baselines: the bare relay (``bench.bare_relay``) run as two processes that
forward to each other, written the plain way. No rooms, no replay buffer, no checks.

Each process serves its own peers. A message for a peer it does not hold goes, stamped with
``from``, as ``<to> <json>`` to the other process, which parses it with stdlib ``json`` and
sends it to its peer. Two ways to get there:

* a direct link, one line per message over one TCP connection: one process listens
  (``--link-listen PORT``), the other connects (``--link-connect PORT``; start the listening
  one first). This is the floor of any design in which a message crosses two server
  processes: no shared store at all;
* Redis pub/sub with redis-py (``--link-redis URL --channel a --other b``): each process
  subscribes to its own channel and PUBLISHes to the other's, one command per message. This
  is two nodes "via Redis", the plain way.

``bench.two_nodes`` runs both beside the broker.

    python -m bench.bare_pair_relay --port 9000 --link-listen 9100
    python -m bench.bare_pair_relay --port 9001 --link-connect 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from bench.bare_relay import PEERS, healthz

# forward(to, body): hand one stamped message (JSON text) to the other process
Forward = Callable[[str, str], Awaitable[None]]
LINK = web.AppKey("link", list[Forward])


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
                await link[0](to, json.dumps(data))
            else:
                await ws.send_str(json.dumps({"type": "error", "code": "unknown_peer"}))
    finally:
        if me is not None and peers.get(me) is ws:
            del peers[me]
    return ws


async def deliver(app: web.Application, line: str) -> None:
    """Send one ``<to> <json>`` from the other process to the peer it names."""
    to, _, body = line.partition(" ")
    target = app[PEERS].get(to)
    if target is not None:
        await target.send_str(json.dumps(json.loads(body)))


async def read_link(app: web.Application, reader: asyncio.StreamReader) -> None:
    while line := await reader.readline():
        await deliver(app, line.decode())


async def tcp_link(app: web.Application, listen: int | None, connect: int | None) -> object:
    """The direct link; returns what must be kept alive (the server, or the reader task)."""

    def forward_to(writer: asyncio.StreamWriter) -> Forward:
        async def forward(to: str, body: str) -> None:
            writer.write(f"{to} {body}\n".encode())

        return forward

    async def on_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        app[LINK].append(forward_to(writer))
        await read_link(app, reader)

    if listen is not None:
        return await asyncio.start_server(on_link, "127.0.0.1", listen)
    reader, writer = await asyncio.open_connection("127.0.0.1", connect)
    app[LINK].append(forward_to(writer))
    return asyncio.create_task(read_link(app, reader))


async def redis_link(app: web.Application, url: str, channel: str, other: str) -> object:
    """The link through Redis pub/sub; returns the reader task."""
    client = aioredis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)

    async def forward(to: str, body: str) -> None:
        await client.publish(other, f"{to} {body}")

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await deliver(app, message["data"].decode())

    app[LINK].append(forward)
    return asyncio.create_task(read())


def make_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    app[PEERS] = {}
    app[LINK] = []
    kept: list[object] = []  # the link's server or reader task, kept from the collector

    async def start_link(app: web.Application) -> None:
        if args.link_redis:
            kept.append(await redis_link(app, args.link_redis, args.channel, args.other))
        else:
            kept.append(await tcp_link(app, args.link_listen, args.link_connect))

    app.on_startup.append(start_link)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", ws_handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--link-listen", type=int, metavar="PORT")
    side.add_argument("--link-connect", type=int, metavar="PORT")
    side.add_argument("--link-redis", metavar="URL")
    parser.add_argument("--channel", default="bare:a", help="with --link-redis: this process's")
    parser.add_argument("--other", default="bare:b", help="with --link-redis: the other's")
    args = parser.parse_args()
    web.run_app(make_app(args), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
