"""This node's part of the signaling network: its local sockets, delivery from the bus,
grace timers for dropped peers, node liveness, and reactions to schedule changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from broker.scheduling.model import Event
from signaling import protocol
from signaling.bus.base import Bus, BusUnavailable
from signaling.connection import Batch, Connection
from signaling.rooms import RECONNECTING, Rooms

log = logging.getLogger(__name__)

HEARTBEAT_TTL = 10.0
HEARTBEAT_EVERY = 3.0


@dataclass(slots=True)
class Local:
    """A socket on this node and where its peer is."""

    conn: Connection
    session_id: str | None = None
    user_id: str | None = None  # idle (ringing) connections
    replaying: bool = False
    held: list[tuple[int, bytes]] = field(default_factory=list)


class SignalingNode:
    def __init__(self, bus: Bus, rooms: Rooms, grace_seconds: float = 30.0) -> None:
        self.bus = bus
        self.rooms = rooms
        self.grace = grace_seconds
        self.local: dict[str, Local] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False
        self.batch = Batch()  # writes held while one read is handled (signaling/intake.py)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.bus.start(self._deliver, self.batch.end)
        await self.bus.heartbeat(HEARTBEAT_TTL)
        if self.bus.shared:  # alone, no node can die but this one: nothing to watch
            self._loops.append(asyncio.create_task(self._liveness(), name="signaling-liveness"))

    def _deliver(self, peer_id: str, seq: int, frame: bytes) -> None:
        entry = self.local.get(peer_id)
        if entry is None:
            return
        if entry.replaying:
            entry.held.append((seq, frame))
            return
        conn = entry.conn
        if seq > conn.last_seq:  # else already sent (replay and live delivery overlap)
            conn.last_seq = seq
            batch = self.batch
            if not batch.open and self._loop is not None:
                batch.hold_for_turn(self._loop)  # the bus delivers several per read
            conn.push(frame)

    def _push(self, entry: Local, seq: int, frame: bytes) -> None:
        if seq <= entry.conn.last_seq:
            return  # already sent (replay and live delivery overlap)
        entry.conn.last_seq = seq
        entry.conn.push(frame)

    async def attach(self, peer_id: str, entry: Local, after_seq: int | None) -> bool:
        """Make ``peer_id`` deliver here; with ``after_seq``, replay what it missed first.

        False when frames it missed are gone (the resume cannot be exact).
        """
        self.local[peer_id] = entry
        timer = self._timers.pop(peer_id, None)
        if timer is not None:
            timer.cancel()
        if after_seq is None:
            await self.bus.claim(peer_id)
            return True
        entry.replaying = True
        entry.conn.last_seq = after_seq
        try:
            await self.bus.claim(peer_id)
            frames = await self.bus.replay(peer_id, after_seq)
            if frames is None:
                return False
            for frame in frames:
                self._push(entry, _seq_of(frame), frame)
            for seq, frame in entry.held:
                self._push(entry, seq, frame)
            return True
        finally:
            entry.held.clear()
            entry.replaying = False

    async def detach(self, peer_id: str, entry: Local) -> None:
        """The socket closed: keep the peer's place for the grace time."""
        if self.local.get(peer_id) is not entry:
            return  # replaced by a newer socket of the same peer (resume)
        del self.local[peer_id]
        if entry.session_id is None:
            await self.bus.release(peer_id)
            if entry.user_id is not None:
                await self.bus.remove_idle(entry.user_id, peer_id)
            await self.bus.forget(peer_id)
            return
        outcome = await self.rooms.disconnected(entry.session_id, peer_id, self.bus.node_id)
        if peer_id in self.local:
            # It resumed on this node while we waited for the room: it is back, not away.
            if outcome == "away":
                await self.rooms.resumed(entry.session_id, peer_id)
            return
        if outcome == "elsewhere":
            return  # resumed on another node, which delivers for it now
        await self.bus.release(peer_id)
        if outcome == "away":
            self._schedule_expiry(entry.session_id, peer_id, self.grace)
        else:
            await self.bus.forget(peer_id)

    def _schedule_expiry(self, session_id: str, peer_id: str, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(peer_id, None)
            self._spawn(self.rooms.expire(session_id, peer_id, self.grace))

        old = self._timers.pop(peer_id, None)
        if old is not None:
            old.cancel()
        self._timers[peer_id] = loop.call_later(delay, fire)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _liveness(self) -> None:
        """Stay alive in the bus; take over peers of nodes that died (after the grace)."""
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                await self.bus.heartbeat(HEARTBEAT_TTL)
                await self._adopt_orphans()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("signaling liveness pass failed")

    async def _adopt_orphans(self) -> None:
        live = await self.bus.live_nodes()
        sessions = {e.session_id for e in self.local.values() if e.session_id}
        for session_id in sessions:
            for p in await self.bus.room_peers(session_id):
                if p.node_id in live or p.peer_id in self._timers:
                    continue
                if p.state != RECONNECTING:
                    log.info(
                        "peer of a dead node", extra={"peer_id": p.peer_id, "node_id": p.node_id}
                    )
                    await self.rooms.disconnected(session_id, p.peer_id, p.node_id)
                self._schedule_expiry(session_id, p.peer_id, self.grace)

    async def emit(self, event: Event) -> None:
        """Schedule changes that affect calls in progress (an ``EventSink``)."""
        if event.type == "session.cancelled":
            await self.rooms.close_room(event.session_id, "cancelled")
        elif event.type == "session.noshow":
            await self.rooms.close_room(event.session_id, "window_closed")

    async def shutdown(self) -> None:
        """Tell every local client to reconnect (elsewhere) and keep their places."""
        for loop_task in self._loops:
            loop_task.cancel()
        if self._closed:
            return
        self._closed = True
        for peer_id, entry in list(self.local.items()):
            # Keep its place first (the others see peer-reconnecting), then send it away.
            with contextlib.suppress(BusUnavailable):
                await self.detach(peer_id, entry)
            entry.conn.push_message({"type": "reconnect", "reason": "shutdown"})
            await entry.conn.finish()
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        await self.bus.close()


def _seq_of(frame: bytes) -> int:
    """The seq stamped on a frame: ``{"seq":N,...``."""
    end = frame.index(b",", 7)
    return int(frame[7:end])


__all__ = ["Local", "SignalingNode", "protocol"]
