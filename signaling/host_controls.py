"""Host controls of a room: admit and deny (the waiting room), remove (``kick``), mute, end;
and closing a room, for ``end`` and for a cancelled session (the node's ``close_room``).

``HostControls`` is mixed into ``Rooms`` (signaling/rooms.py): the handler calls these as
``Rooms`` methods, and they work on the room's state and helpers there, under the same
``bus.room_lock``. Only a host in the call may use the controls (``_host``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from broker.scheduling.joining import Joining
from broker.scheduling.model import ParticipantRole, Session, SessionStatus
from signaling import protocol
from signaling.bus.base import IN_CALL, WAITING, Bus, PeerRecord
from signaling.status import StatusChanges


class HostControls:
    """Mixed into ``Rooms``, which sets the attributes and has the methods declared here."""

    _bus: Bus
    _joining: Joining
    _clock: Callable[[], float]
    _status: StatusChanges

    if TYPE_CHECKING:  # ``Rooms``'s own

        async def send(self, peer_id: str, message: dict[str, Any]) -> None: ...
        async def _session(self, session_id: str) -> Session: ...
        async def _enter_call(
            self, session: Session, me: PeerRecord, others: list[PeerRecord]
        ) -> bool: ...
        async def _announce_waiting(self, session_id: str, peers: list[PeerRecord]) -> None: ...
        async def _leave_locked(self, me: PeerRecord, reason: str) -> list[PeerRecord]: ...
        async def _emptied(self, session_id: str) -> Session | None: ...

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
            await self._status.move(session, SessionStatus.ARRIVED)
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
        await self._status.move(session, SessionStatus.FULFILLED)
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
