"""A minimal signaling test client: one socket and a queue of what the server sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Peer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        self.welcome: dict[str, Any] = {}
        self.last_seq = 0

    @property
    def peer_id(self) -> str:
        return str(self.welcome["peer_id"])

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.last_seq = max(self.last_seq, data.get("seq", 0))
                await self.inbox.put(data)

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind`` (others before it are skipped)."""

        async def find() -> dict[str, Any]:
            while True:
                msg = await self.inbox.get()
                if msg["type"] == kind:
                    return msg

        return await asyncio.wait_for(find(), timeout)

    def resume_info(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "token": self.welcome["resume_token"],
            "last_seq": self.last_seq,
        }

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def open_peer(
    session: Any, url: str, token: str | None, resume: dict[str, Any] | None = None
) -> Peer:
    """Connect (``session`` is an aiohttp ClientSession or TestClient) and say hello."""
    ws = await session.ws_connect(url)
    peer = Peer(ws)
    if token is not None:
        hello: dict[str, Any] = {"type": "hello", "token": token}
        if resume:
            hello["resume"] = resume
        await peer.send(**hello)
        peer.welcome = await peer.expect("welcome")
    return peer


async def mixed_relay_in_order(
    sender: Peer, receiver: Peer, count: int, chat_every: int, timeout: float = 5.0
) -> None:
    """``sender`` sends ``count`` messages back to back, a chat every ``chat_every`` and
    candidates otherwise (the first go through the handler task, the others through the fast
    lane); ``receiver`` must get them all in the order sent, with ``from`` stamped, no error."""
    sent = []
    for n in range(count):
        if n % chat_every == 0:
            await sender.send(type="chat", text=f"m{n}")
        else:
            line = f"candidate:{n} 1 udp 2122260223 127.0.0.1 {50000 + n} typ host"
            candidate = {"candidate": line, "sdpMid": "0"}
            await sender.send(type="candidate", to=receiver.peer_id, candidate=candidate)
        sent.append(f"m{n}")
    got = []
    while len(got) < len(sent):
        msg = await asyncio.wait_for(receiver.inbox.get(), timeout)
        assert msg["type"] != "error", msg
        if msg["type"] == "chat":
            got.append(msg["text"])
        elif msg["type"] == "candidate":
            assert msg["from"] == sender.peer_id
            got.append("m" + msg["candidate"]["candidate"].split(":")[1].split(" ")[0])
    assert got == sent
