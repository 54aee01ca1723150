"""Rooms: who is in which call, the waiting room, host controls, presence, relay and chat.

Room state lives in the ``Bus`` (shared by all nodes); every change of a room happens under
``bus.room_lock``. Frames to peers go through ``bus.send``, so a peer on another node gets
them too, in order, and they are kept for resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import BrokerError
from broker.scheduling import rules
from broker.scheduling.joining import Joining
from broker.scheduling.model import PROFILES, ParticipantRole, Session, SessionKind, SessionStatus
from broker.scheduling.service import make_event
from broker.store.base import Store
from signaling import protocol
from signaling.bus.base import Bus, PeerRecord

log = logging.getLogger(__name__)

WAITING, IN_CALL, RECONNECTING = "waiting", "in_call", "reconnecting"
RING_BEFORE = timedelta(minutes=15)  # a TV coming online is rung for calls starting this soon
STATUS_EVENTS = {SessionStatus.ARRIVED: "session.started", SessionStatus.FULFILLED: "session.ended"}


def live_calls_key(user_id: str) -> str:
    """The bus set of a user's family calls that someone joined while the user was not in
    them: what ``ring_pending`` looks at when the user's TV comes online, instead of searching
    the store on every idle ``hello``. It lives with the bus's idle sets (``Bus.add_idle``),
    under a prefix no user id has; an entry goes when its room is found empty."""
    return f"live-calls:{user_id}"


def peer_view(p: PeerRecord) -> dict[str, Any]:
    return {
        "peer_id": p.peer_id,
        "subject": p.subject,
        "role": p.role,
        "name": p.name,
        "state": p.state,
    }


def profile_view(session: Session) -> dict[str, Any]:
    p = PROFILES[session.quality]
    return {
        "name": p.name.value,
        "width": p.width,
        "height": p.height,
        "frame_rate": p.frame_rate,
        "max_kbps": p.kbps_per_stream,
    }


class Rooms:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        joining: Joining,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._store = store
        self._joining = joining
        self._clock = clock

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
                for uid in session.member_ids:
                    if uid not in present:
                        await self._bus.add_idle(live_calls_key(uid), session_id)
            await self._bus.put_peer(me)
            if waits:
                await self._announce_waiting(session_id, [*peers, me])
            else:
                starts = await self._enter_call(session, me, peers)
        to = SessionStatus.CHECKED_IN if waits else SessionStatus.ARRIVED if starts else None
        await self._record_joined(session, subject, to)
        if session.kind is SessionKind.FAMILY_CALL:
            if named:
                await self.ring(session, subject)
            else:  # the caller's name was just read: do not read it again
                await self._ring(session, subject, name, None)
        log.info(
            "peer joined", extra={"peer_id": peer_id, "session_id": session_id, "state": me.state}
        )

    async def _record_joined(
        self, session: Session, subject: str, to: SessionStatus | None
    ) -> None:
        """The ``joined`` audit entry, and the status change the join makes, in one write."""
        entry = self._joining.audit_entry(session.id, "joined", subject)
        changed = None if to is None else await self._status_change(session, to)
        if changed is None:
            await self._store.append_audit(entry)
        else:
            await self._store.update_session(changed, entry)
            await self._status_event(changed)
        await self._joining.announce(entry, changed or session)

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
        waiting = sorted(
            (p for p in peers if p.state == WAITING), key=lambda p: (p.since, p.peer_id)
        )
        for position, p in enumerate(waiting, start=1):
            await self.send(
                p.peer_id, {"type": "waiting", "session_id": session_id, "position": position}
            )
        for host in peers:
            if host.role == ParticipantRole.HOST.value and host.state != WAITING:
                await self.send(
                    host.peer_id,
                    {"type": "waiting-room", "waiting": [peer_view(p) for p in waiting]},
                )

    async def _host(self, session_id: str, peer_id: str, ref: str | None) -> PeerRecord:
        me = await self._bus.get_peer(session_id, peer_id)
        if me is None or me.role != ParticipantRole.HOST.value or me.state == WAITING:
            raise protocol.ProtocolError(protocol.FORBIDDEN, "only hosts may do this", ref)
        return me

    async def admit(self, session_id: str, host_id: str, target: str, ref: str | None) -> None:
        session = await self._session(session_id)
        async with self._bus.room_lock(session_id):
            host = await self._host(session_id, host_id, ref)
            peers = await self._bus.room_peers(session_id)
            who = next((p for p in peers if p.peer_id == target), None)
            if who is None or who.state != WAITING:
                raise protocol.ProtocolError(protocol.NOT_WAITING, "that peer is not waiting", ref)
            admitted = replace(who, state=IN_CALL, since=self._clock())
            await self._bus.put_peer(admitted)
            # The record and the status first: whoever is told next may look at them.
            await self._joining.record(session_id, "admitted", host.subject, who.subject)
            await self._set_status(session, SessionStatus.ARRIVED)
            await self.send(target, {"type": "admitted", "session_id": session_id})
            others = [p for p in peers if p.peer_id != target]
            await self._enter_call(session, admitted, others)
            await self._announce_waiting(session_id, [*others, admitted])

    async def deny(
        self, session_id: str, host_id: str, target: str, reason: str | None, ref: str | None
    ) -> None:
        async with self._bus.room_lock(session_id):
            host = await self._host(session_id, host_id, ref)
            who = await self._bus.get_peer(session_id, target)
            if who is None or who.state != WAITING:
                raise protocol.ProtocolError(protocol.NOT_WAITING, "that peer is not waiting", ref)
            await self._bus.remove_peer(session_id, target)
            await self.send(target, {"type": "denied", "reason": reason})
            await self._announce_waiting(session_id, await self._bus.room_peers(session_id))
        await self._joining.record(session_id, "denied", host.subject, who.subject, reason)

    async def kick(
        self, session_id: str, host_id: str, target: str, reason: str | None, ref: str | None
    ) -> None:
        async with self._bus.room_lock(session_id):
            host = await self._host(session_id, host_id, ref)
            who = await self._bus.get_peer(session_id, target)
            if who is None or who.peer_id == host_id:
                raise protocol.ProtocolError(protocol.UNKNOWN_PEER, "no such peer here", ref)
            await self.send(target, {"type": "removed", "reason": reason})
            await self._leave_locked(who, "removed")
        await self._joining.record(session_id, "removed", host.subject, who.subject, reason)

    async def mute(
        self, session_id: str, host_id: str, target: str, kind: str, ref: str | None
    ) -> None:
        await self._host(session_id, host_id, ref)
        who = await self._bus.get_peer(session_id, target)
        if who is None:
            raise protocol.ProtocolError(protocol.UNKNOWN_PEER, "no such peer here", ref)
        await self.send(target, {"type": "mute-request", "from": host_id, "kind": kind})

    async def end(
        self, session_id: str, host_id: str, ref: str | None, reason: str = "ended"
    ) -> None:
        host = await self._host(session_id, host_id, ref)
        session = await self._session(session_id)
        await self._joining.record(session_id, "ended", host.subject)
        await self._set_status(session, SessionStatus.FULFILLED)
        await self.close_room(session_id, reason)

    async def close_room(self, session_id: str, reason: str) -> None:
        """Everyone out: a host ended it, or it was cancelled (waiting room included)."""
        async with self._bus.room_lock(session_id):
            peers = await self._bus.room_peers(session_id)
            for p in peers:
                await self.send(
                    p.peer_id, {"type": "session-ended", "session_id": session_id, "reason": reason}
                )
                await self._bus.remove_peer(session_id, p.peer_id)
            if peers:
                await self._emptied(session_id)

    # ringing
    async def ring(self, session: Session, caller: str, only: str | None = None) -> None:
        """Ring the idle connections (a paired TV, a phone) of everyone not in the call yet
        (or just the idle connection ``only``)."""
        caller_user = await self._store.get_user(caller)
        await self._ring(session, caller, caller_user.display_name if caller_user else None, only)

    async def _ring(
        self, session: Session, caller: str, caller_name: str | None, only: str | None
    ) -> None:
        present = {p.subject for p in await self._bus.room_peers(session.id)}
        for uid in session.member_ids:
            if uid in present:
                continue
            idle_peers = await self._bus.idle_peers(uid)
            if only is not None:
                idle_peers = [p for p in idle_peers if p == only]
            if not idle_peers:
                continue
            trusted = caller in await self._store.get_trusted_contacts(uid)
            for idle in idle_peers:
                await self.send(
                    idle,
                    {
                        "type": "incoming-call",
                        "session_id": session.id,
                        "from_user": caller,
                        "from_name": caller_name,
                        "kind": session.kind.value,
                        "title": session.title,
                        "auto_answer": trusted,
                    },
                )

    async def ring_pending(self, user_id: str, idle_peer: str) -> None:
        """A TV came online (or back): ring it for family calls already going on."""
        key = live_calls_key(user_id)
        for session_id in await self._bus.idle_peers(key):  # mostly none: no store query
            in_call = [p for p in await self._bus.room_peers(session_id) if p.state == IN_CALL]
            if not in_call:
                await self._forget_if_empty(key, session_id)
                continue
            session = await self._store.get_session(session_id)
            now = datetime.now(UTC)
            if session is None or not _rings(session, now):
                continue
            trail = await self._store.list_audit(session.id)
            if any(
                a.action == "left" and a.actor_id == user_id and a.reason == "left" for a in trail
            ):
                continue  # they hung up on this call themselves: do not ring them back
            await self.ring(session, in_call[0].subject, only=idle_peer)

    async def _forget_if_empty(self, key: str, session_id: str) -> None:
        # Under the room's lock: a join adds its entries before its peer, under the same lock.
        async with self._bus.room_lock(session_id):
            if not await self._bus.room_peers(session_id):
                await self._bus.remove_idle(key, session_id)

    async def declined(self, session_id: str, user_id: str) -> None:
        session = await self._session(session_id)
        if session.role_of(user_id) is None:
            raise protocol.ProtocolError(protocol.NO_CALL, "not your call")
        for p in await self._bus.room_peers(session_id):
            if p.state != WAITING:
                await self.send(
                    p.peer_id,
                    {"type": "call-declined", "session_id": session_id, "user_id": user_id},
                )

    # relay and chat
    async def relay(
        self,
        session_id: str,
        sender: str,
        msg: protocol.Offer | protocol.Answer | protocol.Candidate,
    ) -> None:
        me, target = await self._bus.get_pair(session_id, sender, msg.to)
        if me is None or me.state == WAITING:
            raise protocol.ProtocolError(protocol.NOT_JOINED, "join the call first", msg.id)
        if target is None or target.state == WAITING or target.peer_id == sender:
            raise protocol.ProtocolError(protocol.UNKNOWN_PEER, "no such peer in this call", msg.id)
        await self._bus.send(msg.to, protocol.relayed(msg, sender))

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
        if session is not None and session.kind is SessionKind.FAMILY_CALL:
            for uid in session.member_ids:
                await self._bus.remove_idle(live_calls_key(uid), session_id)
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

    async def _set_status(self, session: Session, to: SessionStatus) -> None:
        changed = await self._status_change(session, to)
        if changed is not None:
            await self._store.update_session(changed)
            await self._status_event(changed)

    async def _status_change(self, session: Session, to: SessionStatus) -> Session | None:
        """The session (as stored now) moved to ``to``, or None if it is there or cannot go."""
        fresh = await self._store.get_session(session.id) or session
        try:
            changed = rules.transition(fresh, to, datetime.now(UTC))
        except BrokerError:
            return None
        return None if changed is fresh else changed

    async def _status_event(self, changed: Session) -> None:
        kind = STATUS_EVENTS.get(changed.status)
        if kind is not None:
            await self._joining.emit(make_event(kind, changed, datetime.now(UTC)))


def _rings(session: Session, now: datetime) -> bool:
    """Whether a member's TV coming online is rung for this call (if someone is in it)."""
    return (
        session.kind is SessionKind.FAMILY_CALL
        and session.status in (SessionStatus.BOOKED, SessionStatus.ARRIVED)
        and now - rules.MAX_DURATION <= session.start < now + RING_BEFORE
        and session.end > now
    )
