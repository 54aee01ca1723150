"""What a webhook says: the event types, the payload sent, which data may leave."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from broker.scheduling.model import Event, WebhookEndpoint

log = logging.getLogger(__name__)

# Event types (the ``type`` of a payload and of an endpoint's ``event_types`` filter).
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SESSION_CANCELLED = "session.cancelled"
SESSION_STARTING_SOON = "session.starting_soon"
SESSION_STARTED = "session.started"
SESSION_ENDED = "session.ended"
SESSION_NOSHOW = "session.noshow"
PARTICIPANT_JOINED = "participant.joined"
PARTICIPANT_ADMITTED = "participant.admitted"
PARTICIPANT_LEFT = "participant.left"
EVENT_TYPES: tuple[str, ...] = (
    SESSION_CREATED,
    SESSION_UPDATED,
    SESSION_CANCELLED,
    SESSION_STARTING_SOON,
    SESSION_STARTED,
    SESSION_ENDED,
    SESSION_NOSHOW,
    PARTICIPANT_JOINED,
    PARTICIPANT_ADMITTED,
    PARTICIPANT_LEFT,
)

MAX_DATA_VALUE_LENGTH = 500

# Event data carries ids, times and codes only: keys ending in these, or one of the named ones.
_DATA_SUFFIXES = ("_id", "_at")
_DATA_KEYS = frozenset({"reason", "status", "role", "kind", "quality"})


def safe_data(data: Mapping[str, str]) -> dict[str, str]:
    """Only ids, times and codes leave the broker; anything else is dropped (and logged)."""
    kept: dict[str, str] = {}
    for key, value in data.items():
        if key in _DATA_KEYS or key.endswith(_DATA_SUFFIXES):
            kept[key] = value[:MAX_DATA_VALUE_LENGTH]
        else:
            log.warning("event data key dropped", extra={"key": key})
    return kept


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload(event: Event) -> bytes:
    """The JSON body sent for ``event`` (the same bytes on every attempt)."""
    return msgspec.json.encode(
        {
            "id": event.id,
            "type": event.type,
            "occurred_at": _iso(event.occurred_at),
            "session_id": event.session_id,
            "clinic_id": event.clinic_id,
            "data": event.data,
        }
    )


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return not endpoint.disabled and (
        not endpoint.event_types or event_type in endpoint.event_types
    )
