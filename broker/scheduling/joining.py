"""Joining a session: join tokens for members, guest invites, and the audit trail.

A join token is a JWT (audience ``citycall-signaling``, ``typ`` ``join``) scoped to one
session and one role, expiring when the session's join window closes. Guests get one by
redeeming an invite: an unguessable, expiring, limited-use link.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.domain import Role, new_id, utcnow
from broker.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from broker.policy import Principal
from broker.scheduling import access, rules
from broker.scheduling.model import (
    PROFILES,
    AuditEntry,
    Event,
    Invite,
    ParticipantRole,
    QualityProfile,
    Session,
)
from broker.scheduling.service import EventSink, make_event
from broker.store.base import Store
from broker.tokens import Tokens, opaque_secret, secret_hash

log = logging.getLogger(__name__)

JOIN_AUDIENCE = "citycall-signaling"
GUEST_ROLES = (ParticipantRole.INTERPRETER, ParticipantRole.GUEST, ParticipantRole.FAMILY)
MAX_INVITE_USES = 3
MAX_INVITE_TTL = timedelta(days=30)

PARTICIPANT_EVENTS = {
    "joined": "participant.joined",
    "admitted": "participant.admitted",
    "left": "participant.left",
}


@dataclass(frozen=True, slots=True)
class JoinGrant:
    token: str
    expires_at: int
    session: Session
    role: ParticipantRole
    subject: str
    profile: QualityProfile
    window: rules.JoinWindow


@dataclass(frozen=True, slots=True)
class IssuedInvite:
    invite: Invite
    token: str  # shown once, inside the link


class Joining:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        events: EventSink,
        join_before: timedelta,
        join_grace: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._events = events
        self._before = join_before
        self._grace = join_grace
        self._clock = clock

    def window(self, session: Session) -> rules.JoinWindow:
        return rules.join_window(session, self._before, self._grace)

    async def _session(self, session_id: str) -> Session:
        session = await self._store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        return session

    async def join(self, by: Principal, session_id: str) -> JoinGrant:
        session = await self._session(session_id)
        role = session.role_of(by.subject)
        if (
            role is None
            and by.role in (Role.ADMIN, Role.CLINICIAN)
            and access.can_host(by, session)
        ):
            role = ParticipantRole.HOST  # the clinic's staff may step in as hosts
        if role is None:
            raise NotFound("no such session")
        grant = self._grant(session, by.subject, role, None)
        await self._store.append_audit(
            AuditEntry(session.id, self._clock(), "join_token_issued", by.subject)
        )
        return grant

    def _grant(
        self, session: Session, subject: str, role: ParticipantRole, name: str | None
    ) -> JoinGrant:
        now = self._clock()
        window = self.window(session)
        rules.check_join_window(session, window, now)
        ttl = max(60, int((window.closes - now).total_seconds()))
        extra: dict[str, object] = {"sid": session.id, "role": role.value}
        if name is not None:
            extra["name"] = name
        token, expires_at = self._tokens.issue(subject, JOIN_AUDIENCE, "join", ttl, extra, now)
        return JoinGrant(
            token, expires_at, session, role, subject, PROFILES[session.quality], window
        )

    # invites
    async def create_invite(
        self,
        by: Principal,
        session_id: str,
        role: ParticipantRole,
        display_name: str,
        ttl: timedelta | None = None,
        max_uses: int = 1,
    ) -> IssuedInvite:
        session = await self._session(session_id)
        if not access.can_see(by, session) or not access.can_host(by, session):
            raise PermissionDenied("only the session's hosts invite guests")
        if session.status.is_final:
            raise rules.BadTransition(f"session is {session.status.value}")
        if role not in GUEST_ROLES:
            raise InvalidInput("guests join as interpreter, guest or family", field="role")
        if not display_name.strip():
            raise InvalidInput("display_name is empty", field="display_name")
        if not 1 <= max_uses <= MAX_INVITE_USES:
            raise InvalidInput(f"max_uses must be 1..{MAX_INVITE_USES}", field="max_uses")
        now = self._clock()
        live = [i for i in await self._store.list_invites(session_id) if _live(i, now)]
        if len(session.participants) + len(live) + 1 > session.max_participants:
            raise Conflict(
                "the session is full",
                code="session_full",
                max_participants=session.max_participants,
            )
        closes = self.window(session).closes
        expires = min(now + (ttl or MAX_INVITE_TTL), closes)
        token = opaque_secret()
        invite = Invite(
            id=new_id("inv"),
            session_id=session_id,
            token_hash=secret_hash(token),
            role=role,
            display_name=display_name.strip(),
            created_by=by.subject,
            created_at=now,
            expires_at=expires,
            max_uses=max_uses,
        )
        await self._store.create_invite(invite)
        log.info("invite created", extra={"invite_id": invite.id, "session_id": session_id})
        return IssuedInvite(invite, token)

    async def list_invites(self, by: Principal, session_id: str) -> list[Invite]:
        session = await self._session(session_id)
        if not access.can_host(by, session):
            raise PermissionDenied("only the session's hosts see its invites")
        return await self._store.list_invites(session_id)

    async def revoke_invite(self, by: Principal, session_id: str, invite_id: str) -> None:
        session = await self._session(session_id)
        if not access.can_host(by, session):
            raise PermissionDenied("only the session's hosts revoke invites")
        invite = await self._store.get_invite(invite_id)
        if invite is None or invite.session_id != session_id:
            raise NotFound("no such invite")
        await self._store.revoke_invite(invite_id, self._clock())
        log.info("invite revoked", extra={"invite_id": invite_id, "session_id": session_id})

    async def redeem(self, token: str) -> JoinGrant:
        """A guest trades an invite link's secret for a join token (one use)."""
        now = self._clock()
        invite = await self._store.get_invite_by_token(secret_hash(token))
        if invite is None or not _live(invite, now):
            raise NotFound(
                "this invite link is not valid (expired, used or revoked)", code="invalid_invite"
            )
        session = await self._session(invite.session_id)
        rules.check_join_window(session, self.window(session), now)
        used = await self._store.use_invite(invite.id, now)
        if used is None:
            raise NotFound(
                "this invite link is not valid (expired, used or revoked)", code="invalid_invite"
            )
        log.info("invite redeemed", extra={"invite_id": invite.id, "session_id": session.id})
        grant = self._grant(session, invite.id, invite.role, invite.display_name)
        await self._store.append_audit(AuditEntry(session.id, now, "invite_redeemed", invite.id))
        return grant

    async def emit(self, event: Event) -> None:
        """Pass an event on to the clinic's systems (signaling's session.started/ended)."""
        await self._events.emit(event)

    # audit trail
    def audit_entry(
        self,
        session_id: str,
        action: str,
        actor_id: str | None,
        subject_id: str | None = None,
        reason: str | None = None,
    ) -> AuditEntry:
        return AuditEntry(session_id, self._clock(), action, actor_id, subject_id, reason)

    async def announce(self, entry: AuditEntry, session: Session) -> None:
        """The webhook event of a recorded participant action (none for other actions)."""
        kind = PARTICIPANT_EVENTS.get(entry.action)
        if kind is not None:
            data = {"participant_id": entry.subject_id or entry.actor_id or ""}
            if entry.reason:
                data["reason"] = entry.reason
            await self._events.emit(make_event(kind, session, entry.at, **data))

    async def record(
        self,
        session_id: str,
        action: str,
        actor_id: str | None,
        subject_id: str | None = None,
        reason: str | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        """Append to the audit trail; participant actions also become webhook events.
        ``session``: the session, if the caller has just read it (saves reading it again)."""
        if session is None:
            session = await self._session(session_id)
        entry = self.audit_entry(session_id, action, actor_id, subject_id, reason)
        await self._store.append_audit(entry)
        await self.announce(entry, session)

    async def audit(self, by: Principal, session_id: str) -> list[AuditEntry]:
        session = await self._session(session_id)
        if (
            session.clinic_id is None
            or by.clinic_id != session.clinic_id
            or not (by.is_staff or by.api_key)
        ):
            raise PermissionDenied("the audit trail is for the clinic's staff")
        return await self._store.list_audit(session_id)


def _live(invite: Invite, now: datetime) -> bool:
    return invite.revoked_at is None and invite.expires_at > now and invite.uses < invite.max_uses
