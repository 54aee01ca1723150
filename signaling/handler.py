"""``/ws``: the socket transport. Hello phase (auth, resume: signaling/greeting.py), then one
message at a time.

Messages are taken in order, each by one of two lanes: relayed ``offer``/``answer``/
``candidate`` on a one-node bus go by the *fast lane*, in the read callback (signaling/intake.py:
no task wake-up per message), whenever the handler task is idle with nothing queued; everything
else, and everything that arrives while the task is busy, is queued for the handler task. Only
the socket's ``Connection`` writes to it. Bad messages get an ``error`` with the client's
``ref``; only abuse closes the socket. Dead sockets are found by one sweep for all of them
(signaling/heartbeat.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from broker.errors import BrokerError
from broker.scheduling.joining import Joining
from broker.tokens import Tokens
from signaling import protocol
from signaling.bus.base import BusUnavailable
from signaling.connection import Connection, monotonic
from signaling.greeting import Greeting, Identity
from signaling.heartbeat import Heartbeat
from signaling.intake import AVAILABLE as intake_available
from signaling.intake import FastLane, FastWebSocketResponse
from signaling.node import Local, SignalingNode

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0
ABUSE_LIMIT = 100  # messages refused in a row before the socket is closed
MAX_FRAME = 256 * 1024  # above this aiohttp closes with 1009; below, we answer with an error
_RELAYED = (protocol.Offer, protocol.Answer, protocol.Candidate)


class SignalingHandler:
    def __init__(
        self,
        node: SignalingNode,
        tokens: Tokens,
        joining: Joining,
        settings: Any,
        heartbeat: float = 20.0,
    ) -> None:
        self.node = node
        self.tokens = tokens
        self.joining = joining
        self.settings = settings
        self.heartbeat = heartbeat
        self.pulse = Heartbeat(heartbeat)
        self.greeting = Greeting(node, tokens, settings, heartbeat)
        self.batch = node.batch
        self.sockets: set[web.WebSocketResponse] = set()

    async def __call__(self, request: web.Request) -> web.WebSocketResponse:
        # No permessage-deflate: signaling frames are few and small, and a zlib stream per
        # direction would cost CPU on every frame and memory on every idle socket.
        # Dead sockets are found by one sweep for all of them (self.pulse) where the reader
        # counts frames; otherwise by aiohttp's heartbeat.
        ws = FastWebSocketResponse(
            batch=self.batch,
            heartbeat=None if intake_available else self.heartbeat,
            max_msg_size=MAX_FRAME,
            decode_text=False,
            compress=False,
        )
        await ws.prepare(request)
        self.sockets.add(ws)
        conn = Connection(ws, transport=request.transport, batch=self.batch)
        conn.start()
        if ws.intake is not None:
            self.pulse.watch(conn, ws.intake)
        try:
            await self._serve(ws, conn)
        finally:
            self.pulse.forget(conn)
            self.sockets.discard(ws)
            await conn.finish()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        try:
            first = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT)
        except TimeoutError:
            conn.push_message(protocol.error(protocol.HELLO_TIMEOUT, "send hello first"))
            conn.close_soon(protocol.CLOSE_HELLO_TIMEOUT, "hello timeout")
            return
        if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        try:
            hello = protocol.parse(first.data)
            if not isinstance(hello, protocol.Hello):
                raise protocol.ProtocolError(protocol.HELLO_REQUIRED, "send hello first", hello.id)
            identity = await self.greeting.identify(hello)
        except protocol.ProtocolError as exc:
            conn.push_message(protocol.error(exc.code, exc.message, exc.ref))
            conn.close_soon(protocol.CLOSE_AUTH_FAILED, exc.code)
            return
        peer_id, entry, resumed = await self.greeting.welcome(conn, hello, identity)
        log.info(
            "socket authenticated",
            extra={"peer_id": peer_id, "resumed": resumed, "session_id": entry.session_id},
        )
        try:
            await self._read(ws, conn, entry, peer_id, identity, resumed)
        finally:
            try:
                await self.node.detach(peer_id, entry)
            except BusUnavailable:
                log.warning("bus unavailable; peer not marked away", extra={"peer_id": peer_id})

    async def _read(
        self,
        ws: web.WebSocketResponse,
        conn: Connection,
        entry: Local,
        peer_id: str,
        who: Identity,
        joined: bool,
    ) -> None:
        intake = ws.intake if isinstance(ws, FastWebSocketResponse) else None
        if intake is not None and self.node.rooms.can_relay_now:
            intake.lane = self._fast_lane(conn, entry, peer_id)
        try:
            async for raw in ws:
                if intake is not None:
                    intake.busy = True  # messages arriving meanwhile queue up behind this one
                try:
                    joined = await self._take(raw, conn, entry, peer_id, who, joined)
                finally:
                    if intake is not None:
                        intake.busy = False
                if conn.closing:
                    return
        finally:
            if intake is not None:
                intake.lane = None

    async def _take(
        self,
        raw: Any,
        conn: Connection,
        entry: Local,
        peer_id: str,
        who: Identity,
        joined: bool,
    ) -> bool:
        """One message from the queue (the handler task's lane); returns ``joined``."""
        if raw.type is not WSMsgType.TEXT and raw.type is not WSMsgType.BINARY:
            return joined
        if not conn.bucket.allow(monotonic()):
            self._refused(conn)
            return joined
        msg: protocol.ClientMessage | None = None
        try:
            msg = protocol.parse(raw.data)
            sid = entry.session_id
            if joined and sid is not None and isinstance(msg, _RELAYED):  # the common case
                await self.node.rooms.relay(sid, peer_id, msg)
            else:
                joined = await self._dispatch(msg, conn, entry, peer_id, who, joined)
        except protocol.ProtocolError as exc:
            conn.push_message(protocol.error(exc.code, exc.message, exc.ref))
        except BrokerError as exc:
            conn.push_message(protocol.error(exc.code, exc.message, getattr(msg, "id", None)))
        except BusUnavailable:
            _unavailable(conn, peer_id, getattr(msg, "id", None))
        return joined

    @staticmethod
    def _refused(conn: Connection) -> None:
        """A message over the rate limit: answered, or the socket closed when it is a flood."""
        if conn.bucket.over >= ABUSE_LIMIT:
            conn.close_soon(protocol.CLOSE_ABUSE, "flood")
        else:
            conn.push_message(protocol.error(protocol.RATE_LIMITED, "slow down"))

    def _fast_lane(self, conn: Connection, entry: Local, peer_id: str) -> FastLane:
        """Relay ``offer``/``answer``/``candidate`` in the read callback (signaling/intake.py):
        the same checks as ``_take``, on a bus that relays without suspending."""
        relay_now, allow, now = self.node.rooms.relay_now, conn.bucket.allow, time.monotonic

        def failed(ref: str | None, exc: Exception) -> None:  # a send found failing later
            if not isinstance(exc, BusUnavailable):
                code = str(exc).split(" ", 1)[0]  # the error's code only: no frame in logs
                log.error("relay refused by the bus: %s", code, extra={"peer_id": peer_id})
            _unavailable(conn, peer_id, ref)

        def lane(data: bytes) -> bool:
            sid = entry.session_id
            if sid is None or conn.closing:
                return False
            msg = protocol.parse_relayed(data)
            if msg is None:
                return False  # the handler task parses it and answers (and counts it)
            if not allow(now()):
                self._refused(conn)
                return True
            try:
                if not relay_now(sid, peer_id, msg, failed):
                    conn.bucket.refund()  # the handler task relays it, and counts it again
                    return False
            except protocol.ProtocolError as exc:
                conn.push_message(protocol.error(exc.code, exc.message, exc.ref))
            except BusUnavailable:
                _unavailable(conn, peer_id, msg.id)
            except Exception:  # never into aiohttp's reader
                log.exception("relay failed", extra={"peer_id": peer_id})
            return True

        return lane

    async def _dispatch(
        self,
        msg: protocol.ClientMessage,
        conn: Connection,
        entry: Local,
        peer_id: str,
        who: Identity,
        joined: bool,
    ) -> bool:
        rooms = self.node.rooms
        sid = entry.session_id
        if isinstance(msg, protocol.Ping):
            conn.push_message({"type": "pong", "ref": msg.id})
            return joined
        if isinstance(msg, protocol.Hello):
            raise protocol.ProtocolError(protocol.ALREADY_JOINED, "already said hello", msg.id)
        if isinstance(msg, protocol.Accept | protocol.Decline):
            return await self._answer_call(msg, conn, entry, peer_id, who, joined)
        if sid is None:
            raise protocol.ProtocolError(protocol.NO_CALL, "this connection has no call", msg.id)
        if isinstance(msg, protocol.Join):
            if joined:
                raise protocol.ProtocolError(protocol.ALREADY_JOINED, "already joined", msg.id)
            assert who.role is not None
            await rooms.join(peer_id, sid, who.subject, who.role, who.name, None, msg.id)
            return True
        if not joined:
            raise protocol.ProtocolError(protocol.NOT_JOINED, "join first", msg.id)
        if isinstance(msg, protocol.Offer | protocol.Answer | protocol.Candidate):
            await rooms.relay(sid, peer_id, msg)
        elif isinstance(msg, protocol.Chat):
            await rooms.chat(sid, peer_id, msg.text, msg.id)
        elif isinstance(msg, protocol.Admit):
            await rooms.admit(sid, peer_id, msg.peer, msg.id)
        elif isinstance(msg, protocol.Deny):
            await rooms.deny(sid, peer_id, msg.peer, msg.reason, msg.id)
        elif isinstance(msg, protocol.Kick):
            await rooms.kick(sid, peer_id, msg.peer, msg.reason, msg.id)
        elif isinstance(msg, protocol.Mute):
            await rooms.mute(sid, peer_id, msg.peer, msg.kind, msg.id)
        elif isinstance(msg, protocol.Media):
            await rooms.media(sid, peer_id, msg.audio, msg.video, msg.id)
        elif isinstance(msg, protocol.End):
            await rooms.end(sid, peer_id, msg.id)
        elif isinstance(msg, protocol.Leave):
            await rooms.leave(sid, peer_id, "left")
            entry.session_id = None
            conn.close_soon(protocol.CLOSE_NORMAL, "left")
        return joined

    async def _answer_call(
        self,
        msg: protocol.Accept | protocol.Decline,
        conn: Connection,
        entry: Local,
        peer_id: str,
        who: Identity,
        joined: bool,
    ) -> bool:
        if who.principal is None or entry.session_id is not None:
            raise protocol.ProtocolError(protocol.NO_CALL, "not an idle connection", msg.id)
        if isinstance(msg, protocol.Decline):
            await self.node.rooms.declined(msg.session_id, who.subject)
            return joined
        try:
            grant = await self.joining.join(who.principal, msg.session_id)
        except BrokerError as exc:
            code = (
                protocol.OUTSIDE_JOIN_WINDOW
                if exc.code == "outside_join_window"
                else (protocol.NO_CALL)
            )
            raise protocol.ProtocolError(code, exc.message, msg.id) from None
        await self.node.bus.remove_idle(who.subject, peer_id)
        entry.session_id = msg.session_id
        entry.user_id = None
        await self.node.rooms.join(
            peer_id, msg.session_id, who.subject, grant.role.value, None, None, msg.id
        )
        # The welcome's resume token was for an idle connection: this one resumes the call.
        token = self.greeting.resume_token(peer_id, msg.session_id, who.subject)
        conn.push_message(
            {"type": "resume-token", "resume_token": token, "session_id": msg.session_id}
        )
        return True

    async def close_all(self) -> None:
        await self.pulse.stop()
        await self.node.shutdown()
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=protocol.CLOSE_GOING_AWAY, message=b"shutdown")


def _unavailable(conn: Connection, peer_id: str, ref: str | None) -> None:
    """The bus (Redis) could not take a message: the sender is told, its socket kept."""
    log.warning("bus unavailable for a message", extra={"peer_id": peer_id})
    conn.push_message(
        protocol.error(
            protocol.UNAVAILABLE, "the call service is briefly unavailable; try again", ref
        )
    )
