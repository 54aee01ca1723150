"""Status: the changes a room makes to its session's status, with their records and events.

A check-up *arrives* when a patient is admitted (or joins a visit without a waiting room), a
family call when a second member joins it; a host's ``end`` *fulfils* the session. Each change
is a ``rules.transition`` of the session as stored now (a change it cannot make, or one already
made, is none), written with its audit entry where there is one, then announced as a webhook
event (``session.started``, ``session.ended``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker.errors import BrokerError
from broker.scheduling import rules
from broker.scheduling.joining import Joining
from broker.scheduling.model import Session, SessionStatus
from broker.scheduling.service import make_event
from broker.store.base import Store

__all__ = ["STATUS_EVENTS", "StatusChanges"]

STATUS_EVENTS = {SessionStatus.ARRIVED: "session.started", SessionStatus.FULFILLED: "session.ended"}


class StatusChanges:
    def __init__(self, store: Store, joining: Joining) -> None:
        self._store = store
        self._joining = joining

    async def joined(self, session: Session, subject: str, to: SessionStatus | None) -> None:
        """The ``joined`` audit entry, and the status change the join makes, in one write."""
        entry = self._joining.audit_entry(session.id, "joined", subject)
        changed = None if to is None else await self._change(session, to)
        if changed is None:
            await self._store.append_audit(entry)
        else:
            await self._store.update_session(changed, entry)
            await self._event(changed)
        await self._joining.announce(entry, changed or session)

    async def move(self, session: Session, to: SessionStatus) -> None:
        """Move the session to ``to`` if it can go there (and is not there yet)."""
        changed = await self._change(session, to)
        if changed is not None:
            await self._store.update_session(changed)
            await self._event(changed)

    async def _change(self, session: Session, to: SessionStatus) -> Session | None:
        """The session (as stored now) moved to ``to``, or None if it is there or cannot go."""
        fresh = await self._store.get_session(session.id) or session
        try:
            changed = rules.transition(fresh, to, datetime.now(UTC))
        except BrokerError:
            return None
        return None if changed is fresh else changed

    async def _event(self, changed: Session) -> None:
        kind = STATUS_EVENTS.get(changed.status)
        if kind is not None:
            await self._joining.emit(make_event(kind, changed, datetime.now(UTC)))
