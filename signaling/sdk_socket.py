"""The SDK's signaling socket, the base of ``BrokerClient`` (``signaling.client``): hello and
welcome, one reader task, resume after a drop, and sends that wait while it is resumed.

One reader task owns the socket; sends are serialized by a lock. Server frames carry ``seq``;
the socket remembers the last one and, when it drops, reconnects and says ``hello`` with
``resume`` (frames seen twice are dropped by seq). If the server refuses the resume itself, it
comes back as a new peer; if the join token expired meanwhile, the client fetches another.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from signaling import protocol
from signaling.peer import Event, IceServer
from signaling.sdk_wire import FINAL_CLOSES, ClientError

__all__ = ["SignalingSocket"]

log = logging.getLogger(__name__)


class SignalingSocket:
    """Opens the signaling socket and keeps it up; ``BrokerClient`` implements the hooks at the
    end (its HTTP session, what to do with messages and events, a new join token, and what to do
    when it came back as a new peer)."""

    def __init__(
        self, *, heartbeat: float, reconnect_delays: Sequence[float], send_timeout: float
    ) -> None:
        self.peer_id: str | None = None
        self.session_id: str | None = None
        self.welcome: Mapping[str, Any] = {}
        self.last_seq = 0
        self._ice: tuple[IceServer, ...] = ()  # the join answer's, then each welcome's
        self._heartbeat = heartbeat
        self._delays = tuple(reconnect_delays)
        self._send_timeout = send_timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._url = ""
        self._join_token = ""
        self._resume_token = ""
        self._finished = False  # the session is over for us: no resume
        self._closing = False
        self._ready = asyncio.Event()  # welcomed and the socket is up
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def _open(self, resume: bool) -> Mapping[str, Any]:
        ws = await self._session().ws_connect(self._url, heartbeat=self._heartbeat)
        hello: dict[str, Any] = {"type": "hello", "token": self._join_token}
        if resume and self.peer_id is not None:
            hello["resume"] = {
                "peer_id": self.peer_id,
                "token": self._resume_token,
                "last_seq": self.last_seq,
            }
        try:
            await ws.send_str(json.dumps(hello))
            first = await ws.receive(timeout=10)
            if first.type != aiohttp.WSMsgType.TEXT:
                raise ClientError("closed", f"socket closed before welcome ({ws.close_code})")
            welcome = json.loads(first.data)
            if welcome.get("type") != "welcome":
                raise ClientError(str(welcome.get("code")), str(welcome.get("message")))
        except BaseException:
            await ws.close()
            raise
        if welcome["peer_id"] != self.peer_id:
            self.last_seq = 0  # a new peer: its seq starts again
        self.peer_id = str(welcome["peer_id"])
        self._resume_token = str(welcome["resume_token"])
        if welcome.get("session_id"):
            self.session_id = str(welcome["session_id"])
        self.welcome = welcome
        self._ice = tuple(IceServer.from_wire(s) for s in welcome.get("ice_servers", ()))
        self._ws = ws
        self._ready.set()
        return dict(welcome)

    async def _read_loop(self) -> None:
        code: int | None = None
        while True:
            ws = self._ws
            assert ws is not None
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    message = json.loads(frame.data)
                    if self._fresh(message):
                        await self._handle(message)
            code = ws.close_code
            self._ready.clear()
            if self._closing or self._finished or code in FINAL_CLOSES:
                break
            log.info("signaling socket dropped", extra={"peer_id": self.peer_id, "code": code})
            if not await self._resume():
                break
        self._emit(Event("closed", data={"code": code}))

    def _fresh(self, message: Mapping[str, Any]) -> bool:
        """False for a message seen before the socket dropped (by ``seq``)."""
        seq = message.get("seq")
        if isinstance(seq, int) and seq > 0:  # 0: not kept for replay (errors, pong)
            if seq <= self.last_seq:
                return False
            self.last_seq = seq
        return True

    async def _resume(self) -> bool:
        fresh = False  # after the server refused the resume itself: come back as a new peer
        for delay in self._delays:
            await asyncio.sleep(delay)
            if self._closing:
                return False
            try:
                welcome = await self._open(resume=not fresh)
            except ClientError as exc:
                if exc.code == protocol.TOKEN_EXPIRED and await self._renew_join_token():
                    continue
                if exc.code in (protocol.INVALID_TOKEN, protocol.TOKEN_EXPIRED):
                    return False
                fresh = exc.code != "closed"
                continue
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if welcome.get("resumed"):
                self._emit(Event("reconnected", data=welcome))
                return True
            await self._came_back_new(welcome)
            return True
        return False

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one message; waits (bounded) while the socket is being resumed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._send_timeout
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ClientError("not_connected", "the signaling socket is down") from None
            ws = self._ws
            assert ws is not None
            try:
                async with self._send_lock:
                    await ws.send_str(json.dumps(message))
                return
            except (ConnectionError, RuntimeError):
                self._ready.clear()  # the reader resumes, then we try again
                await asyncio.sleep(0.01)

    # what BrokerClient does
    def _session(self) -> aiohttp.ClientSession:
        """The HTTP session the socket is opened with (shared with the REST calls)."""
        raise NotImplementedError

    async def _handle(self, message: dict[str, Any]) -> None:
        """One server message, not seen before."""
        raise NotImplementedError

    def _emit(self, event: Event) -> None:
        raise NotImplementedError

    async def _renew_join_token(self) -> bool:
        """After ``token_expired``: try to get a new join token (False: no way to get one)."""
        raise NotImplementedError

    async def _came_back_new(self, welcome: Mapping[str, Any]) -> None:
        """The resume was refused (our place was gone): we are a new peer now."""
        raise NotImplementedError
