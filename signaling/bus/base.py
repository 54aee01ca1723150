"""The ``Bus`` protocol: how signaling nodes share rooms and reach each other's peers.

Two backends: ``MemoryBus`` (one node, in-process) and ``RedisBus`` (many nodes on one Redis).
Both pass ``tests/signaling/test_bus_contract.py``.

Delivery model: every frame sent to a peer gets the next ``seq`` of that peer and is kept in a
bounded replay buffer; the node that has *claimed* the peer (its socket lives there) receives it
through the ``deliver`` callback given to ``start``. A peer that reconnects, on any node, claims
itself there and asks for ``replay(peer_id, last_seq)``: nothing lost, nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# deliver(peer_id, seq, frame): called on the claiming node for each frame, in seq order. It is
# synchronous (it only hands the frame to the socket's queue), so deliveries never interleave.
Deliver = Callable[[str, int, bytes], None]
# delivered(): the frames of one read of the bus were delivered (see Bus.start).
Delivered = Callable[[], None]
# failed(ref, exc): a send that went out without being awaited (FastBus.send_now) failed later;
# ref is what the sender gave with it (its message's id), handed back as it is.
Failed = Callable[[str | None, Exception], None]

REPLAY_LIMIT = 256  # frames kept per peer for resume
# Seconds a live call is remembered after it was last added: longer than any call lasts (8 hours)
# with its join window, so an entry whose room was never seen empty cannot stay forever.
LIVE_CALL_TTL = 12 * 3600.0

# PeerRecord.state: in the waiting room, in the call, or its socket dropped (it may resume).
WAITING, IN_CALL, RECONNECTING = "waiting", "in_call", "reconnecting"


class BusUnavailable(Exception):
    """The backend (Redis) cannot be reached."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """One peer of a session's room, as every node sees it."""

    peer_id: str
    session_id: str
    subject: str  # user id, or invite id for guests
    role: str  # participant role: host, patient, family, interpreter, guest
    name: str | None  # display name (guests), else looked up by clients via the REST API
    node_id: str
    state: str  # WAITING, IN_CALL or RECONNECTING
    since: float  # unix time of entering this state (waiting-room order)
    device: str | None = None
    before: str | None = None  # the state to return to when a reconnecting peer resumes
    away_since: float | None = None  # unix time the socket dropped (state "reconnecting")
    audio: bool = True  # its microphone is on, as it last said (``media``)
    video: bool = True  # its camera is on


class Bus(Protocol):
    @property
    def node_id(self) -> str: ...

    @property
    def shared(self) -> bool:
        """Whether other nodes may use this bus too (then a node keeps its liveness key
        fresh and takes over the peers of nodes that died)."""
        ...

    async def start(self, deliver: Deliver, delivered: Delivered | None = None) -> None:
        """Begin receiving frames for peers claimed by this node. A bus that receives frames in
        reads of its own calls ``delivered`` after each read's deliveries (the node writes
        them out then, in one write per socket)."""

    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # frames
    async def send(self, peer_id: str, frame: bytes) -> int:
        """Stamp the peer's next ``seq`` on ``frame`` (a JSON object), keep it for replay and
        deliver it to the node that has claimed the peer (if any). Returns the seq."""

    async def claim(self, peer_id: str) -> None:
        """This node delivers for ``peer_id`` from now on (a move from another node included)."""

    async def release(self, peer_id: str) -> None:
        """Stop delivering ``peer_id`` here (frames are still kept for replay)."""

    async def replay(self, peer_id: str, after_seq: int) -> list[bytes] | None:
        """Kept frames with seq > ``after_seq``, in order; None if some were already dropped."""

    async def forget(self, peer_id: str) -> None:
        """Drop the peer's buffer, seq counter and claim (it left for good)."""

    # rooms
    def room_lock(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion for changes to one room, across all nodes."""

    async def room_peers(self, session_id: str) -> list[PeerRecord]:
        """Peers of the room, ordered by ``since`` then ``peer_id``."""

    async def put_peer(self, record: PeerRecord) -> None: ...
    async def get_peer(self, session_id: str, peer_id: str) -> PeerRecord | None: ...

    async def get_pair(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        """Two peers of one room in one round trip (the relay's check)."""

    async def remove_peer(self, session_id: str, peer_id: str) -> None: ...

    # ringing: the idle connections (TV, phone) of a user
    async def add_idle(self, user_id: str, peer_id: str) -> None: ...
    async def remove_idle(self, user_id: str, peer_id: str) -> None: ...
    async def idle_peers(self, user_id: str) -> list[str]: ...

    # ringing: the family calls going on without a member, per member (see signaling.ringing)
    async def add_live_call(self, user_id: str, session_id: str) -> None:
        """Remember call ``session_id`` as live for ``user_id`` for the bus's ``live_call_ttl``
        (``LIVE_CALL_TTL``) seconds; adding it again starts that time again."""

    async def remove_live_call(self, user_id: str, session_id: str) -> None: ...

    async def live_calls(self, user_id: str) -> list[str]:
        """The session ids of the user's live calls whose time has not run out, sorted."""

    # node liveness
    async def heartbeat(self, ttl_seconds: float) -> None:
        """Mark this node alive for ``ttl_seconds``."""

    async def live_nodes(self) -> set[str]: ...


@runtime_checkable
class FastBus(Protocol):
    """A bus that can relay without suspending: the socket's fast lane uses these from the
    read callback (signaling/intake.py). Either may decline (None, False): then the lane
    leaves the message to the handler task, which uses ``get_pair`` and ``send``."""

    def get_pair_now(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None] | None:
        """``get_pair`` if it can be answered now, else None."""

    def send_now(self, peer_id: str, frame: bytes, failed: Failed, ref: str | None) -> bool:
        """``send``, if it can go now (else False); a failure found later goes to
        ``failed(ref, exc)`` (``BusUnavailable`` when the frame may not have been stored)."""


# Rules both backends share.


def check_frame(frame: bytes) -> None:
    """``frame`` must be a compact, non-empty JSON object (``seq`` is spliced in after ``{``)."""
    if not frame.startswith(b'{"'):
        raise ValueError('a frame must be a compact, non-empty JSON object (starting with {")')


def kept_after(seq: int, kept: list[tuple[int, bytes]], after_seq: int) -> list[bytes] | None:
    """The replay answer: frames after ``after_seq``, or None when some of them are gone.

    ``seq`` is the last seq handed out and ``kept`` the (seq, frame) pairs still buffered.
    A client that asks for more than was ever handed out saw a counter that was reset since.
    """
    if after_seq > seq:
        return None
    if after_seq < seq and (not kept or kept[0][0] > after_seq + 1):
        return None
    return [frame for n, frame in kept if n > after_seq]
