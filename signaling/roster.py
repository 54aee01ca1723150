"""What the peers of a room are told about each other and the call: the peer object of
``joined``, ``peer-joined`` and ``waiting-room``, the waiting room's order, the quality
profile. Pure."""

from __future__ import annotations

from typing import Any

from broker.scheduling.model import PROFILES, Session
from signaling.bus.base import WAITING, PeerRecord

__all__ = ["peer_view", "profile_view", "waiting_order"]


def peer_view(p: PeerRecord) -> dict[str, Any]:
    """A peer as the others see it (the protocol's Peer object)."""
    return {
        "peer_id": p.peer_id,
        "subject": p.subject,
        "role": p.role,
        "name": p.name,
        "state": p.state,
        "audio": p.audio,
        "video": p.video,
    }


def waiting_order(peers: list[PeerRecord]) -> list[PeerRecord]:
    """The waiting room, first come first."""
    return sorted((p for p in peers if p.state == WAITING), key=lambda p: (p.since, p.peer_id))


def profile_view(session: Session) -> dict[str, Any]:
    """The quality profile of ``joined`` (what to ask the camera for, the bitrate cap)."""
    p = PROFILES[session.quality]
    return {
        "name": p.name.value,
        "width": p.width,
        "height": p.height,
        "frame_rate": p.frame_rate,
        "max_kbps": p.kbps_per_stream,
    }
