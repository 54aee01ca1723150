"""A floor for the relay's cost: the leanest reasonable Python relay, for reference.

The same wire as ``bench/bare_relay.py`` (``hello`` with a peer id, then messages with ``to``
forwarded with ``from``), written for speed instead of plainly: uvloop, bytes in and out (no
text decoding), msgspec decoding only the envelope and leaving the payload (``sdp`` or
``candidate``) as raw JSON, no validation, no auth, no queues. What the broker does on top of
this (checks, rate limits, seq and replay buffer, rooms) is the difference between the two.

    python -m bench.lean_relay --port 9001
"""

from __future__ import annotations

import msgspec
import uvloop
from aiohttp import WSMsgType, web

from bench.bare_relay import PEERS, serve

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


decode = msgspec.json.Decoder(Incoming).decode
encode = msgspec.json.Encoder().encode


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


def main() -> None:
    uvloop.install()
    serve(__doc__, ws_handler, 9001)


if __name__ == "__main__":
    main()
