"""The scheduling half of the ``Store`` protocol: sessions, availability, invites, webhooks.

Atomicity the backends guarantee:
- ``book_session``: the guard sees every active session that could clash and the write
  happens only if nothing changed in between (SQLite: one IMMEDIATE transaction; Redis:
  WATCH/MULTI with retries). Two bookings racing for one slot give exactly one winner,
  even from two broker processes.
- ``use_invite``: uses are counted atomically, never past ``max_uses``.
- ``acquire_lease``: one holder at a time per name (background workers across nodes).
- ``mark_once``: true exactly once per key (reminders sent once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from broker.scheduling.model import (
    AuditEntry,
    Availability,
    Delivery,
    Invite,
    Session,
    SessionStatus,
    Site,
    WebhookEndpoint,
)

# Called inside the atomic section with the active sessions that share a person or the site
# with the candidate and overlap [window_start, window_end); returns the session to write,
# or raises (DoubleBooked, CapacityExceeded, ...) to refuse.
BookingGuard = Callable[[Sequence[Session]], Session]


@dataclass(frozen=True, slots=True)
class SessionQuery:
    user_id: str | None = None  # sessions this user takes part in
    clinic_id: str | None = None
    starts_from: datetime | None = None  # start >= starts_from
    starts_before: datetime | None = None  # start < starts_before
    ends_before: datetime | None = None  # end < ends_before
    statuses: tuple[SessionStatus, ...] = ()  # empty: any
    series_id: str | None = None
    limit: int = 500


class ScheduleStore(Protocol):
    # sessions
    async def book_session(
        self,
        candidate: Session,
        guard: BookingGuard,
        window_start: datetime,
        window_end: datetime,
    ) -> Session:
        """Insert or replace (same id) ``guard(clashing)`` atomically; return what was written."""

    async def get_session(self, session_id: str) -> Session | None: ...

    async def update_session(self, session: Session, audit: AuditEntry | None = None) -> None:
        """Replace a session without booking checks (status changes, participants' names);
        with ``audit``, append that entry to the trail in the same transaction."""

    async def list_sessions(self, query: SessionQuery) -> list[Session]:
        """Matching sessions ordered by start, then id."""

    # availability and sites
    async def put_availability(self, availability: Availability) -> None: ...
    async def get_availability(self, clinician_id: str) -> Availability | None: ...
    async def list_availability(self, clinic_id: str) -> list[Availability]: ...
    async def put_site(self, site: Site) -> None: ...
    async def get_site(self, site_id: str) -> Site | None: ...

    # invites
    async def create_invite(self, invite: Invite) -> None: ...
    async def get_invite(self, invite_id: str) -> Invite | None: ...
    async def get_invite_by_token(self, token_hash: str) -> Invite | None: ...
    async def list_invites(self, session_id: str) -> list[Invite]: ...

    async def use_invite(self, invite_id: str, at: datetime) -> Invite | None:
        """Count one use if the invite is live (not revoked, not expired, uses left)."""

    async def revoke_invite(self, invite_id: str, at: datetime) -> bool: ...

    # calendar feeds: one live token per user
    async def set_feed_token(self, user_id: str, token_hash: str) -> None:
        """Replace the user's feed token (the old one stops working)."""

    async def get_feed_user(self, token_hash: str) -> str | None: ...

    # trusted contacts: calls from them may be answered automatically (a TV)
    async def set_trusted_contacts(self, user_id: str, contacts: tuple[str, ...]) -> None: ...
    async def get_trusted_contacts(self, user_id: str) -> tuple[str, ...]: ...

    # webhooks and the durable outbox
    async def create_webhook(self, endpoint: WebhookEndpoint) -> None: ...
    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    async def list_webhooks(self, clinic_id: str) -> list[WebhookEndpoint]: ...
    async def delete_webhook(self, endpoint_id: str) -> bool: ...

    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Append to the outbox; ``seq`` is assigned here, increasing per endpoint."""

    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Undelivered deliveries that are first in line for their (endpoint, session) and
        whose ``next_attempt_at`` has come, oldest first."""

    async def mark_delivered(self, delivery_id: str, at: datetime) -> None: ...

    async def mark_failed(
        self, delivery_id: str, attempts: int, next_attempt_at: datetime, error: str
    ) -> None: ...

    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]: ...

    # audit trail
    async def append_audit(self, entry: AuditEntry) -> None: ...
    async def list_audit(self, session_id: str) -> list[AuditEntry]: ...

    # coordination between nodes
    async def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or extend the named lease if free, expired, or already ``holder``'s."""

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is marked (until it expires)."""
