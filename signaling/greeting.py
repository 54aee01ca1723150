"""A socket's hello phase, after its ``hello``: who it is (the token), resume, the welcome.

``SignalingHandler`` (signaling/handler.py) reads the ``hello`` and hands it here; what comes
back (the peer, its ``Local`` entry, whether it resumed) is what the handler then serves.
The resume token is issued here too, for the welcome and for an idle connection that took a
call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.domain import new_id, utcnow
from broker.errors import InvalidToken
from broker.policy import Principal
from broker.scheduling.joining import JOIN_AUDIENCE
from broker.tokens import Tokens, unverified_type
from broker.turn import ice_servers
from signaling import protocol
from signaling.connection import Connection
from signaling.node import Local, SignalingNode

RESUME_AUDIENCE = "citycall-resume"


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    session_id: str | None  # None: an idle connection that can ring
    role: str | None
    name: str | None
    principal: Principal | None  # for idle connections (to accept calls)


class Greeting:
    def __init__(
        self, node: SignalingNode, tokens: Tokens, settings: Any, heartbeat: float
    ) -> None:
        self.node = node
        self.tokens = tokens
        self.settings = settings
        self.heartbeat = heartbeat

    async def identify(self, hello: protocol.Hello) -> Identity:
        # One signature check: the unverified ``typ`` picks the verification, which then
        # checks everything (a forged ``typ`` fails it like any other forged claim).
        try:
            if unverified_type(hello.token) == "access":
                access = await self.tokens.verify_access(hello.token)
                return Identity(
                    access.user_id,
                    None,
                    None,
                    None,
                    Principal(access.user_id, access.role, access.clinic_id),
                )
            claims = await self.tokens.verify(hello.token, JOIN_AUDIENCE, "join")
        except InvalidToken as exc:
            code = protocol.TOKEN_EXPIRED if exc.code == "token_expired" else protocol.INVALID_TOKEN
            raise protocol.ProtocolError(code, exc.message, hello.id) from None
        return Identity(
            str(claims["sub"]), str(claims["sid"]), str(claims["role"]), claims.get("name"), None
        )

    async def welcome(
        self, conn: Connection, hello: protocol.Hello, who: Identity
    ) -> tuple[str, Local, bool]:
        entry = Local(
            conn, session_id=who.session_id, user_id=who.subject if who.session_id is None else None
        )
        resumed = False
        peer_id = new_id("peer").replace("_", "-")
        if hello.resume is not None:
            resumed = await self._resume(hello, who, entry)
            if resumed:
                peer_id = hello.resume.peer_id
        conn.peer_id = peer_id
        conn.push_message(
            {
                "type": "welcome",
                "peer_id": peer_id,
                "resume_token": self.resume_token(peer_id, entry.session_id, who.subject),
                "heartbeat": self.heartbeat,
                "resumed": resumed,
                "session_id": entry.session_id,
                "user_id": who.subject,
                "ice_servers": ice_servers(self.settings, peer_id, utcnow()),
            }
        )
        if resumed:
            assert hello.resume is not None
            ok = await self.node.attach(peer_id, entry, hello.resume.last_seq)
            if not ok:
                conn.push_message(
                    protocol.error(protocol.RESUME_FAILED, "some messages were lost; join again")
                )
        else:
            await self.node.attach(peer_id, entry, None)
            if who.session_id is None:
                await self.node.bus.add_idle(who.subject, peer_id)
                await self.node.rooms.ring_pending(who.subject, peer_id)
        return peer_id, entry, resumed

    def resume_token(self, peer_id: str, session_id: str | None, subject: str) -> str:
        """The secret that lets ``peer_id`` resume (``hello.resume``), bound to its session
        (none for an idle connection) and to the person."""
        token, _ = self.tokens.issue(
            peer_id, RESUME_AUDIENCE, "resume", 86400, {"sid": session_id or "", "subj": subject}
        )
        return token

    async def _resume(self, hello: protocol.Hello, who: Identity, entry: Local) -> bool:
        """Put ``entry`` back in the place of the peer ``hello.resume`` names, if its token is
        good for this person and session and the peer is still in the call. With a join token
        the session is the token's; with an access token (a TV that took a call on its idle
        connection) it is the resume token's, which the server gave this person for it."""
        assert hello.resume is not None
        try:
            claims = await self.tokens.verify(hello.resume.token, RESUME_AUDIENCE, "resume")
        except InvalidToken:
            return False
        sid = claims.get("sid")
        if (
            claims["sub"] != hello.resume.peer_id
            or claims.get("subj") != who.subject
            or not isinstance(sid, str)
            or not sid
            or (who.session_id is not None and sid != who.session_id)
            or (who.session_id is None and who.principal is None)
        ):
            return False
        back = await self.node.rooms.resumed(sid, hello.resume.peer_id)
        if back is None:
            return False
        entry.session_id, entry.user_id = sid, None
        old = self.node.local.get(hello.resume.peer_id)
        if old is not None:  # the old socket of this peer is still open here: it loses
            old.conn.close_soon(protocol.CLOSE_REPLACED, "resumed elsewhere")
        return True
