"""Relayed messages the broker could not pass on, sent again (the client SDK's side of the
``unavailable`` error; pure: no I/O, no clock).

With many nodes, a relayed ``offer`` or ``answer`` goes through Redis; while Redis is briefly
away the broker answers ``error`` ``unavailable`` with the message's ``id`` as ``ref`` and keeps
the socket. A lost offer or answer would leave the call without media, so the client gives each
relayed message an id, remembers the last few, and sends one again when the broker says it
was not passed on, a bounded number of times with a growing pause. A description the peer
gets twice is harmless (a duplicate answer is ignored; a duplicate offer is answered again).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["KEEP", "PAUSES", "Resends", "Retry"]

KEEP = 64  # relayed messages remembered (an offer and an answer per peer is what matters)
PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0)  # seconds before each try again; then it is given up


@dataclass(frozen=True, slots=True)
class Retry:
    """Send ``message`` again after ``pause`` seconds (try number ``attempt``)."""

    message: dict[str, Any]
    pause: float
    attempt: int


class Resends:
    """The relayed messages sent lately, by id, and how often each was sent again."""

    def __init__(self, prefix: str = "r", keep: int = KEEP, pauses: tuple[float, ...] = PAUSES):
        self._prefix = prefix
        self._keep = keep
        self._pauses = pauses
        self._next = 0
        self._sent: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` with an id of its own (a copy), remembered."""
        self._next += 1
        stamped = {**message, "id": f"{self._prefix}{self._next}"}
        self._remember(stamped, 0)
        return stamped

    def _remember(self, message: dict[str, Any], tries: int) -> None:
        ident = str(message["id"])
        self._sent[ident] = (message, tries)
        self._sent.move_to_end(ident)
        while len(self._sent) > self._keep:
            self._sent.popitem(last=False)

    def refused(self, ref: object) -> Retry | None:
        """The broker could not pass on the message ``ref``: what to send again, and when;
        None when it is not ours, forgotten, or tried often enough (then it is forgotten)."""
        if not isinstance(ref, str):
            return None
        entry = self._sent.pop(ref, None)
        if entry is None:
            return None
        message, tries = entry
        if tries >= len(self._pauses):
            return None
        self._remember(message, tries + 1)
        return Retry(message, self._pauses[tries], tries + 1)

    def __len__(self) -> int:
        return len(self._sent)
