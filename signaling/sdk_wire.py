"""What the SDK reads off the broker: its refusals, the REST join answer, which closes and
messages end a call, and which peer a server message is about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signaling import protocol
from signaling.peer import IceServer

__all__ = [
    "FINAL_CLOSES",
    "FINAL_MESSAGES",
    "RELAYED",
    "ClientError",
    "JoinInfo",
    "peer_of",
]

# Closes after which the client does not resume.
FINAL_CLOSES = frozenset(
    {
        protocol.CLOSE_NORMAL,
        protocol.CLOSE_HELLO_TIMEOUT,
        protocol.CLOSE_AUTH_FAILED,
        protocol.CLOSE_ABUSE,
        protocol.CLOSE_REPLACED,
        protocol.CLOSE_REMOVED,
        protocol.CLOSE_SESSION_ENDED,
    }
)
FINAL_MESSAGES = frozenset({"session-ended", "removed", "denied", "replaced"})
RELAYED = frozenset({"offer", "answer", "candidate"})


class ClientError(Exception):
    """The broker refused something: ``code`` is its stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """What ``POST /api/v1/sessions/{id}/join`` (or an invite redemption) returns."""

    session_id: str
    join_token: str
    signaling_url: str
    ice_servers: tuple[IceServer, ...]
    quality: Mapping[str, Any]
    role: str

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JoinInfo:
        return cls(
            str(data["session_id"]),
            str(data["join_token"]),
            str(data["signaling_url"]),
            tuple(IceServer.from_wire(s) for s in data.get("ice_servers", ())),
            dict(data.get("quality") or {}),
            str(data.get("role", "")),
        )


def peer_of(message: Mapping[str, Any]) -> str | None:
    """The peer a server message is from or about (None for the rest)."""
    if isinstance(message.get("from"), str):
        return str(message["from"])
    if isinstance(message.get("peer"), dict):
        return str(message["peer"].get("peer_id"))
    if isinstance(message.get("peer_id"), str) and message.get("type") != "joined":
        return str(message["peer_id"])
    return None
