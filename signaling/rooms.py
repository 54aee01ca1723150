"""Rooms: who is in which call, the waiting room, presence, relay and chat.

``Rooms`` is the facade the socket handler and the node use. Its host controls (admit, deny,
kick, mute, end) and ``close_room`` are ``signaling.host_controls``'s, mixed in. Ringing the
members of a family call who are not in it is ``signaling.ringing``'s (``ring_pending`` and
``declined`` are here for the handler); the session status changes a room makes are
``signaling.status``'s.

Room state lives in the ``Bus`` (shared by all nodes); every change of a room happens under
``bus.room_lock``. Frames to peers go through ``bus.send``, so a peer on another node gets
them too, in order, and they are kept for resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.scheduling import rules
from broker.scheduling.joining import Joining
from broker.scheduling.model import ParticipantRole, Session, SessionKind, SessionStatus
from broker.store.base import Store
from signaling import protocol
from signaling.bus.base import IN_CALL, RECONNECTING, WAITING, Bus, Failed, FastBus, PeerRecord
from signaling.host_controls import HostControls
from signaling.ringing import Ringing
from signaling.roster import peer_view, profile_view, waiting_order
from signaling.status import StatusChanges

__all__ = ["IN_CALL", "RECONNECTING", "WAITING", "Rooms"]

log = logging.getLogger(__name__)


class Rooms(HostControls):
    def __init__(
        self,
        bus: Bus,
        store: Store,
        joining: Joining,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._fast = bus if isinstance(bus, FastBus) else None  # relays without suspending
        self._store = store
        self._joining = joining
        self._clock = clock
        self._ringing = Ringing(bus, store)
        self._status = StatusChanges(store, joining)

    async def send(self, peer_id: str, message: dict[str, Any]) -> None:
        await self._bus.send(peer_id, protocol.encode(message))

    async def _session(self, session_id: str) -> Session:
        session = await self._store.get_session(session_id)
        if session is None:
            raise protocol.ProtocolError(protocol.SESSION_ENDED, "no such session")
        return session

    # joining
    async def join(
        self,
        peer_id: str,
        session_id: str,
        subject: str,
        role: str,
        name: str | None,
        device: str | None,
        ref: str | None,
    ) -> None:
        session = await self._session(session_id)
        now = datetime.now(UTC)
        try:
            rules.check_join_window(session, self._joining.window(session), now)
        except BrokerError as exc:
            code = (
                protocol.OUTSIDE_JOIN_WINDOW
                if isinstance(exc, rules.OutsideJoinWindow)
                else protocol.SESSION_ENDED
            )
            raise protocol.ProtocolError(code, exc.message, ref) from None
        named = name is not None
        if name is None:
            user = await self._store.get_user(subject)
            name = user.display_name if user is not None else None
        waits = session.kind is SessionKind.CHECKUP and ParticipantRole(role).waits
        starts = False
        async with self._bus.room_lock(session_id):
            peers = await self._bus.room_peers(session_id)
            for old in peers:
                if old.subject == subject and old.peer_id != peer_id:
                    await self._drop(old, "replaced")  # the same person on a new device
            peers = [p for p in peers if p.subject != subject]
            if len(peers) + 1 > session.max_participants:
                raise protocol.ProtocolError(protocol.SESSION_FULL, "the session is full", ref)
            me = PeerRecord(
                peer_id,
                session_id,
                subject,
                role,
                name,
                self._bus.node_id,
                WAITING if waits else IN_CALL,
                self._clock(),
                device,
            )
            if session.kind is SessionKind.FAMILY_CALL:  # before the peer: see ring_pending
                present = {subject, *(p.subject for p in peers)}
                await self._ringing.remember_call(session, present)
            await self._bus.put_peer(me)
            if waits:
                await self._announce_waiting(session_id, [*peers, me])
            else:
                starts = await self._enter_call(session, me, peers)
        to = SessionStatus.CHECKED_IN if waits else SessionStatus.ARRIVED if starts else None
        await self._status.joined(session, subject, to)
        if session.kind is SessionKind.FAMILY_CALL:
            if named:
                await self._ringing.ring(session, subject)
            else:  # the caller's name was just read: do not read it again
                await self._ringing.ring_as(session, subject, name)
        log.info(
            "peer joined", extra={"peer_id": peer_id, "session_id": session_id, "state": me.state}
        )

    async def _enter_call(self, session: Session, me: PeerRecord, others: list[PeerRecord]) -> bool:
        """Tell ``me`` and the others; True if this starts a family call (its status is the
        caller's to change)."""
        in_call = [p for p in others if p.state != WAITING]
        await self.send(
            me.peer_id,
            {
                "type": "joined",
                "session_id": session.id,
                "role": me.role,
                "peer_id": me.peer_id,
                "peers": [peer_view(p) for p in in_call],
                "quality": profile_view(session),
                "status": session.status.value,
            },
        )
        for p in in_call:
            await self.send(p.peer_id, {"type": "peer-joined", "peer": peer_view(me)})
        waiting = [p for p in others if p.state == WAITING]
        if me.role == ParticipantRole.HOST.value and waiting:
            await self.send(
                me.peer_id, {"type": "waiting-room", "waiting": [peer_view(p) for p in waiting]}
            )
        return session.kind is SessionKind.FAMILY_CALL and bool(in_call)

    async def _announce_waiting(self, session_id: str, peers: list[PeerRecord]) -> None:
        """Tell each waiting peer its position, and the hosts the whole list."""
        waiting = waiting_order(peers)
        for position, p in enumerate(waiting, start=1):
            await self.send(
                p.peer_id, {"type": "waiting", "session_id": session_id, "position": position}
            )
        await self._show_waiting_room(peers, waiting)

    async def _show_waiting_room(self, peers: list[PeerRecord], waiting: list[PeerRecord]) -> None:
        """The hosts in the call get the whole waiting list."""
        for host in peers:
            if host.role == ParticipantRole.HOST.value and host.state != WAITING:
                await self.send(
                    host.peer_id,
                    {"type": "waiting-room", "waiting": [peer_view(p) for p in waiting]},
                )

    async def media(
        self, session_id: str, peer_id: str, audio: bool, video: bool, ref: str | None
    ) -> None:
        """The peer's microphone and camera, on or off: kept on its record (``joined`` and
        ``peer-joined`` show it) and told to the others in the call (``peer-media``)."""
        async with self._bus.room_lock(session_id):
            me = await self._bus.get_peer(session_id, peer_id)
            if me is None:
                raise protocol.ProtocolError(protocol.NOT_JOINED, "join first", ref)
            if (me.audio, me.video) == (audio, video):
                return
            await self._bus.put_peer(replace(me, audio=audio, video=video))
            peers = await self._bus.room_peers(session_id)  # under the lock: no one missed
            if me.state == WAITING:  # the hosts see it in the waiting room, the rest later
                await self._show_waiting_room(peers, waiting_order(peers))
                return
        message = {"type": "peer-media", "from": peer_id, "audio": audio, "video": video}
        for p in peers:
            if p.peer_id != peer_id and p.state != WAITING:
                await self.send(p.peer_id, message)

    # ringing (``signaling.ringing``)
    async def ring_pending(self, user_id: str, idle_peer: str) -> None:
        """A TV came online (or back): ring it for family calls already going on."""
        await self._ringing.ring_pending(user_id, idle_peer)

    async def declined(self, session_id: str, user_id: str) -> None:
        await self._ringing.declined(await self._session(session_id), user_id)

    # relay and chat
    async def relay(
        self,
        session_id: str,
        sender: str,
        msg: protocol.Offer | protocol.Answer | protocol.Candidate,
    ) -> None:
        me, target = await self._bus.get_pair(session_id, sender, msg.to)
        _check_relay(me, target, sender, msg.id)
        await self._bus.send(msg.to, protocol.relayed(msg, sender))

    def relay_now(
        self,
        session_id: str,
        sender: str,
        msg: protocol.Offer | protocol.Answer | protocol.Candidate,
        failed: Failed,
    ) -> bool:
        """``relay`` without suspending, on a ``FastBus`` (``can_relay_now``): False when the
        bus cannot tell or send now, or the addressee is not in the room (then ``relay``,
        which also checks the form of ``msg.to``: see ``protocol.parse_relayed``); a send
        that fails later goes to ``failed(msg.id, exc)``."""
        bus = self._fast
        assert bus is not None
        pair = bus.get_pair_now(session_id, sender, msg.to)
        if pair is None or pair[1] is None:
            return False
        _check_relay(pair[0], pair[1], sender, msg.id)
        return bus.send_now(msg.to, protocol.relayed(msg, sender), failed, msg.id)

    @property
    def can_relay_now(self) -> bool:
        return self._fast is not None

    async def chat(self, session_id: str, sender: str, text: str, ref: str | None) -> None:
        peers = await self._bus.room_peers(session_id)
        if not any(p.peer_id == sender and p.state != WAITING for p in peers):
            raise protocol.ProtocolError(protocol.NOT_JOINED, "join the call first", ref)
        message = {
            "type": "chat",
            "from": sender,
            "text": text,
            "at": datetime.now(UTC).isoformat(),
        }
        for p in peers:
            if p.state != WAITING:
                await self.send(p.peer_id, message)

    # leaving, dropping, resuming
    async def leave(self, session_id: str, peer_id: str, reason: str) -> None:
        async with self._bus.room_lock(session_id):
            me = await self._bus.get_peer(session_id, peer_id)
            if me is None:
                return
            rest = await self._leave_locked(me, reason)
            session = None if rest else await self._emptied(session_id)
        await self._joining.record(session_id, "left", me.subject, reason=reason, session=session)

    async def _emptied(self, session_id: str) -> Session | None:
        """The room is empty now (lock held): its family call is live for nobody any more."""
        session = await self._store.get_session(session_id)
        if session is not None:
            await self._ringing.forget_call(session)
        return session

    async def _leave_locked(self, me: PeerRecord, reason: str) -> list[PeerRecord]:
        """Remove ``me`` and tell the rest; returns the rest."""
        await self._bus.remove_peer(me.session_id, me.peer_id)
        rest = await self._bus.room_peers(me.session_id)
        if me.state == WAITING:
            await self._announce_waiting(me.session_id, rest)
            return rest
        for p in rest:
            if p.state != WAITING:
                await self.send(
                    p.peer_id, {"type": "peer-left", "peer_id": me.peer_id, "reason": reason}
                )
        return rest

    async def _drop(self, old: PeerRecord, reason: str) -> None:
        """Remove a peer (lock held) and tell its socket to close."""
        await self.send(
            old.peer_id, {"type": reason if reason == "replaced" else "removed", "reason": reason}
        )
        await self._leave_locked(old, reason)

    async def disconnected(self, session_id: str, peer_id: str, node_id: str | None = None) -> str:
        """The socket dropped: keep the place, tell the others.

        Returns ``"away"`` (now reconnecting), ``"gone"`` (no longer in the room) or
        ``"elsewhere"`` (it has already resumed on another node than ``node_id``).
        """
        async with self._bus.room_lock(session_id):
            me = await self._bus.get_peer(session_id, peer_id)
            if me is None:
                return "gone"
            if node_id is not None and me.node_id != node_id:
                return "elsewhere"
            if me.state == RECONNECTING:
                return "away"
            away = replace(me, state=RECONNECTING, before=me.state, away_since=self._clock())
            await self._bus.put_peer(away)
            if me.state != WAITING:
                for p in await self._bus.room_peers(session_id):
                    if p.peer_id != peer_id and p.state != WAITING:
                        await self.send(
                            p.peer_id, {"type": "peer-reconnecting", "peer_id": peer_id}
                        )
        return "away"

    async def resumed(self, session_id: str, peer_id: str) -> PeerRecord | None:
        async with self._bus.room_lock(session_id):
            me = await self._bus.get_peer(session_id, peer_id)
            if me is None:
                return None
            state = (me.before or IN_CALL) if me.state == RECONNECTING else me.state
            back = replace(me, state=state, before=None, away_since=None, node_id=self._bus.node_id)
            await self._bus.put_peer(back)
            if back.state != WAITING:
                for p in await self._bus.room_peers(session_id):
                    if p.peer_id != peer_id and p.state != WAITING:
                        await self.send(p.peer_id, {"type": "peer-resumed", "peer_id": peer_id})
        return back

    async def expire(self, session_id: str, peer_id: str, grace: float) -> None:
        """The grace time passed without a resume: the peer is gone."""
        async with self._bus.room_lock(session_id):
            me = await self._bus.get_peer(session_id, peer_id)
            if me is None or me.state != RECONNECTING or me.away_since is None:
                return
            if self._clock() - me.away_since < grace - 0.05:
                return  # it came back and dropped again since: its own timer decides
            rest = await self._leave_locked(me, "dropped")
            session = None if rest else await self._emptied(session_id)
        await self._bus.forget(peer_id)
        await self._joining.record(
            session_id, "left", me.subject, reason="dropped", session=session
        )


def _check_relay(
    me: PeerRecord | None, target: PeerRecord | None, sender: str, ref: str | None
) -> None:
    """A relay needs its sender in the call and its addressee another peer in the call."""
    if me is None or me.state == WAITING:
        raise protocol.ProtocolError(protocol.NOT_JOINED, "join the call first", ref)
    if target is None or target.state == WAITING or target.peer_id == sender:
        raise protocol.ProtocolError(protocol.UNKNOWN_PEER, "no such peer in this call", ref)
