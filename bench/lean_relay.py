"""A floor for the relay's cost: the leanest reasonable Python relay, for reference.

The same wire as ``bench/bare_relay.py`` (``hello`` with a peer id, then messages with ``to``
forwarded with ``from``), written for speed instead of plainly: uvloop, bytes in and out (no
text decoding), msgspec decoding only the envelope and leaving the payload (``sdp`` or
``candidate``) as raw JSON, no validation, no auth, no queues. What the broker does on top of
this (checks, rate limits, seq and replay buffer, rooms) is the difference between the two.

    python -m bench.lean_relay --port 9001
"""

from __future__ import annotations

import argparse

import msgspec
import uvloop
from aiohttp import WSMsgType, web

NONE = msgspec.Raw()  # not given (omitted again on the way out)


class Incoming(msgspec.Struct):
    type: str
    to: str | None = None
    peer: str | None = None
    sdp: msgspec.Raw = NONE
    candidate: msgspec.Raw = NONE


class Outgoing(msgspec.Struct, omit_defaults=True, rename={"sender": "from"}):
    type: str
    sender: str
    sdp: msgspec.Raw = NONE
    candidate: msgspec.Raw = NONE


PEERS = web.AppKey("peers", dict[str, web.WebSocketResponse])
decode = msgspec.json.Decoder(Incoming).decode
encode = msgspec.json.Encoder().encode


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(decode_text=False, compress=False)
    await ws.prepare(request)
    peers = request.app[PEERS]
    me: str | None = None
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            data = decode(msg.data)
            if me is None:
                if data.type == "hello" and data.peer is not None:
                    me = data.peer
                    peers[me] = ws
                    await ws.send_frame(
                        b'{"type":"welcome","peer_id":' + encode(me) + b"}", WSMsgType.TEXT
                    )
                continue
            target = peers.get(data.to or "")
            if target is None:
                await ws.send_frame(b'{"type":"error","code":"unknown_peer"}', WSMsgType.TEXT)
                continue
            out = Outgoing(data.type, me, data.sdp, data.candidate)
            await target.send_frame(encode(out), WSMsgType.TEXT)
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
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
