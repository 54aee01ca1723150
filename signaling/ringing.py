"""Ringing: a family call reaching the members who are not in it yet.

Someone joining a family call rings the idle connections (a paired TV, a phone; the bus's
``idle_peers``) of every member not in the room, with ``auto_answer`` when the caller is one of
the member's trusted contacts. The call is also remembered per absent member while it goes on
(the member's *live calls* on the bus, ``Bus.add_live_call``), so a TV that comes online during
it is rung too (``ring_pending``), unless its user hung up on that call. An entry goes when its
room is found empty, or after the bus's ``LIVE_CALL_TTL`` unless a join adds it again.
``declined`` tells the call that a member said no.

``Rooms`` owns one ``Ringing`` and calls it from the room's own steps; the handler reaches it
through ``Rooms.ring_pending`` and ``Rooms.declined``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from broker.scheduling import rules
from broker.scheduling.model import Session, SessionKind, SessionStatus
from broker.store.base import Store
from signaling import protocol
from signaling.bus.base import IN_CALL, WAITING, Bus

__all__ = ["RING_BEFORE", "Ringing", "rings"]

RING_BEFORE = timedelta(minutes=15)  # a TV coming online is rung for calls starting this soon


def rings(session: Session, now: datetime) -> bool:
    """Whether a member's TV coming online is rung for this call (if someone is in it)."""
    return (
        session.kind is SessionKind.FAMILY_CALL
        and session.status in (SessionStatus.BOOKED, SessionStatus.ARRIVED)
        and now - rules.MAX_DURATION <= session.start < now + RING_BEFORE
        and session.end > now
    )


class Ringing:
    def __init__(self, bus: Bus, store: Store) -> None:
        self._bus = bus
        self._store = store

    async def _send(self, peer_id: str, message: dict[str, Any]) -> None:
        await self._bus.send(peer_id, protocol.encode(message))

    # the live calls of the absent members
    async def remember_call(self, session: Session, present: set[str]) -> None:
        """Someone is joining family call ``session`` (room lock held, before the peer is put:
        see ``ring_pending``): it is live for each member not ``present``."""
        for uid in session.member_ids:
            if uid not in present:
                await self._bus.add_live_call(uid, session.id)

    async def forget_call(self, session: Session) -> None:
        """The room of ``session`` is empty now (lock held): live for nobody any more."""
        if session.kind is SessionKind.FAMILY_CALL:
            for uid in session.member_ids:
                await self._bus.remove_live_call(uid, session.id)

    # ringing
    async def ring(self, session: Session, caller: str, only: str | None = None) -> None:
        """Ring the idle connections (a paired TV, a phone) of everyone not in the call yet
        (or just the idle connection ``only``)."""
        caller_user = await self._store.get_user(caller)
        name = caller_user.display_name if caller_user else None
        await self.ring_as(session, caller, name, only)

    async def ring_as(
        self, session: Session, caller: str, caller_name: str | None, only: str | None = None
    ) -> None:
        """``ring``, with the caller's name already known."""
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
                await self._send(
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
        for session_id in await self._bus.live_calls(user_id):  # mostly none: no store query
            in_call = [p for p in await self._bus.room_peers(session_id) if p.state == IN_CALL]
            if not in_call:
                await self._forget_if_empty(user_id, session_id)
                continue
            session = await self._store.get_session(session_id)
            now = datetime.now(UTC)
            if session is None or not rings(session, now):
                continue
            trail = await self._store.list_audit(session.id)
            if any(
                a.action == "left" and a.actor_id == user_id and a.reason == "left" for a in trail
            ):
                continue  # they hung up on this call themselves: do not ring them back
            await self.ring(session, in_call[0].subject, only=idle_peer)

    async def _forget_if_empty(self, user_id: str, session_id: str) -> None:
        # Under the room's lock: a join adds its entries before its peer, under the same lock.
        async with self._bus.room_lock(session_id):
            if not await self._bus.room_peers(session_id):
                await self._bus.remove_live_call(user_id, session_id)

    async def declined(self, session: Session, user_id: str) -> None:
        """Member ``user_id`` declined the call: tell those in it."""
        if session.role_of(user_id) is None:
            raise protocol.ProtocolError(protocol.NO_CALL, "not your call")
        for p in await self._bus.room_peers(session.id):
            if p.state != WAITING:
                await self._send(
                    p.peer_id,
                    {"type": "call-declined", "session_id": session.id, "user_id": user_id},
                )
