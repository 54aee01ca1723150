"""``MemoryBus``: the ``Bus`` protocol inside one process, for a single signaling node.

Per peer: a ``seq`` counter, the last ``REPLAY_LIMIT`` stamped frames and the time of the last
send. A claimed peer gets each frame through ``deliver`` (synchronous) before ``send``
returns, so deliveries to one peer are in ``seq`` order without a lock. A peer nobody has
claimed is forgotten ``peer_ttl`` seconds after its last send, like the keys of ``RedisBus``;
a claimed peer is kept. A live call (``add_live_call``) is dropped ``live_call_ttl`` seconds
after it was last added.

Rooms are dicts, room locks are one ``asyncio.Lock`` per session, dropped when nobody holds or
waits for it. This node is the only node: ``live_nodes`` is always ``{node_id}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from signaling.bus.base import (
    LIVE_CALL_TTL,
    REPLAY_LIMIT,
    Deliver,
    Delivered,
    Failed,
    PeerRecord,
    check_frame,
    kept_after,
)

if TYPE_CHECKING:
    from signaling.bus.base import Bus, FastBus

__all__ = ["PEER_TTL", "MemoryBus"]

log = logging.getLogger(__name__)

PEER_TTL = 3600.0  # seconds an unclaimed peer is kept after its last send
_NO_ROOM: dict[str, PeerRecord] = {}


def _never(ref: str | None, exc: Exception) -> None:
    """``send`` awaits nothing later: a failure is raised at once, never reported here."""


@dataclass(slots=True)
class _Peer:
    touched: float
    seq: int = 0
    frames: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=REPLAY_LIMIT))


@dataclass(slots=True)
class _RoomLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters


class MemoryBus:
    """All signaling state of one node, in memory."""

    def __init__(
        self,
        node_id: str | None = None,
        *,
        peer_ttl: float = PEER_TTL,
        live_call_ttl: float = LIVE_CALL_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_id = node_id or f"node-{uuid.uuid4().hex[:12]}"
        self._peer_ttl = peer_ttl
        self._live_call_ttl = live_call_ttl
        self._clock = clock
        self._deliver: Deliver | None = None
        self._peers: dict[str, _Peer] = {}
        self._claims: set[str] = set()
        self._rooms: dict[str, dict[str, PeerRecord]] = {}
        self._room_locks: dict[str, _RoomLock] = {}
        self._idle: dict[str, set[str]] = {}
        self._live_calls: dict[str, dict[str, float]] = {}  # user -> session -> expiry

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def shared(self) -> bool:
        return False  # this node is the only node

    async def start(self, deliver: Deliver, delivered: Delivered | None = None) -> None:
        self._deliver = deliver  # called in the sender's turn: no reads of its own to end

    async def close(self) -> None:
        self._deliver = None

    async def ping(self) -> None:
        return None

    # frames

    def _peer(self, peer_id: str) -> _Peer | None:
        """The peer's state, unless it expired (unclaimed and silent for ``peer_ttl``)."""
        peer = self._peers.get(peer_id)
        if peer is not None and self._expired(peer_id, peer, self._clock()):
            del self._peers[peer_id]
            return None
        return peer

    def _expired(self, peer_id: str, peer: _Peer, now: float) -> bool:
        return peer_id not in self._claims and now - peer.touched > self._peer_ttl

    async def send(self, peer_id: str, frame: bytes) -> int:
        self.send_now(peer_id, frame, _never, None)
        return self._peers[peer_id].seq

    def send_now(self, peer_id: str, frame: bytes, failed: Failed, ref: str | None) -> bool:
        """``send`` without suspending (``FastBus``); it never fails later."""
        if not frame.startswith(b'{"'):
            check_frame(frame)  # raises
        peer = self._peers.get(peer_id)
        claimed = peer_id in self._claims
        if peer is None or not claimed:  # a claimed peer never expires (release touches it)
            now = self._clock()
            if peer is None or now - peer.touched > self._peer_ttl:
                peer = self._peers[peer_id] = _Peer(touched=now)  # new, or expired: start again
            peer.touched = now
        peer.seq = seq = peer.seq + 1
        stamped = b'{"seq":%d,%b' % (seq, frame[1:])  # protocol.stamp_seq, inline
        peer.frames.append((seq, stamped))
        deliver = self._deliver
        if claimed and deliver is not None:
            try:
                deliver(peer_id, seq, stamped)
            except Exception:  # the receiver's problem, never the sender's: log and go on
                log.exception("deliver failed for peer %s seq %d", peer_id, seq)
        return True

    async def claim(self, peer_id: str) -> None:
        self._claims.add(peer_id)

    async def release(self, peer_id: str) -> None:
        self._claims.discard(peer_id)
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.touched = self._clock()  # unclaimed from now on: the TTL starts here

    async def replay(self, peer_id: str, after_seq: int) -> list[bytes] | None:
        peer = self._peer(peer_id)
        if peer is None:
            return kept_after(0, [], after_seq)
        return kept_after(peer.seq, list(peer.frames), after_seq)

    async def forget(self, peer_id: str) -> None:
        self._claims.discard(peer_id)
        self._peers.pop(peer_id, None)

    # rooms

    def room_lock(self, session_id: str) -> AbstractAsyncContextManager[None]:
        return self._room_lock(session_id)

    @asynccontextmanager
    async def _room_lock(self, session_id: str) -> AsyncIterator[None]:
        entry = self._room_locks.get(session_id)
        if entry is None:
            entry = self._room_locks[session_id] = _RoomLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._room_locks.get(session_id) is entry:
                del self._room_locks[session_id]

    async def room_peers(self, session_id: str) -> list[PeerRecord]:
        room = self._rooms.get(session_id, {})
        return sorted(room.values(), key=lambda r: (r.since, r.peer_id))

    async def put_peer(self, record: PeerRecord) -> None:
        self._rooms.setdefault(record.session_id, {})[record.peer_id] = record

    async def get_peer(self, session_id: str, peer_id: str) -> PeerRecord | None:
        return self._rooms.get(session_id, {}).get(peer_id)

    async def get_pair(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        return self.get_pair_now(session_id, a, b)

    def get_pair_now(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        """``get_pair`` without suspending (``FastBus``)."""
        room = self._rooms.get(session_id, _NO_ROOM)
        return room.get(a), room.get(b)

    async def remove_peer(self, session_id: str, peer_id: str) -> None:
        room = self._rooms.get(session_id)
        if room is not None:
            room.pop(peer_id, None)
            if not room:
                del self._rooms[session_id]

    # ringing

    async def add_idle(self, user_id: str, peer_id: str) -> None:
        self._idle.setdefault(user_id, set()).add(peer_id)

    async def remove_idle(self, user_id: str, peer_id: str) -> None:
        peers = self._idle.get(user_id)
        if peers is not None:
            peers.discard(peer_id)
            if not peers:
                del self._idle[user_id]

    async def idle_peers(self, user_id: str) -> list[str]:
        return sorted(self._idle.get(user_id, ()))

    async def add_live_call(self, user_id: str, session_id: str) -> None:
        expiry = self._clock() + self._live_call_ttl
        self._live_calls.setdefault(user_id, {})[session_id] = expiry

    async def remove_live_call(self, user_id: str, session_id: str) -> None:
        calls = self._live_calls.get(user_id)
        if calls is not None:
            calls.pop(session_id, None)
            if not calls:
                del self._live_calls[user_id]

    async def live_calls(self, user_id: str) -> list[str]:
        self._drop_expired_calls(user_id, self._clock())
        return sorted(self._live_calls.get(user_id, ()))

    def _drop_expired_calls(self, user_id: str, now: float) -> None:
        calls = self._live_calls.get(user_id)
        if calls is None:
            return
        for session_id, expiry in list(calls.items()):
            if expiry <= now:
                del calls[session_id]
        if not calls:
            del self._live_calls[user_id]

    # liveness

    async def heartbeat(self, ttl_seconds: float) -> None:
        """The only node is alive while it runs; this also drops expired peers and calls."""
        now = self._clock()
        for peer_id, peer in list(self._peers.items()):
            if self._expired(peer_id, peer, now):
                del self._peers[peer_id]
        for user_id in list(self._live_calls):
            self._drop_expired_calls(user_id, now)

    async def live_nodes(self) -> set[str]:
        return {self._node_id}


if TYPE_CHECKING:

    def _conforms(bus: MemoryBus) -> Bus:  # mypy checks the protocols here
        return bus

    def _is_fast(bus: MemoryBus) -> FastBus:
        return bus
