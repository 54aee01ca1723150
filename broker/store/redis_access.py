"""Access without an account in Redis: invites, calendar feed tokens, trusted contacts.

A part of ``RedisStore``. Records are msgspec JSON; each key names one entity::

    cc:{invite:<id>}                 string  Invite JSON
    cc:{invite-token:<hash>}         string  invite id
    cc:{session:<id>}:invites        zset    invite ids, score = created_at
    cc:{feed-user:<user id>}         string  token hash of the user's calendar feed
    cc:{feed-token:<hash>}           string  user id
    cc:{trusted:<user id>}           string  JSON list of user ids whose calls auto-answer

Index entries that point across slots (invite token, feed token) are checked against the
record they name, so a write interrupted between two keys never answers wrongly. Uses and
revocations of an invite are compare-and-set on its record.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from broker.errors import Conflict
from broker.scheduling.model import Invite
from broker.store.redis_base import RedisBase, dump, load, micros, texts
from broker.store.redis_errors import translated

__all__ = ["RedisAccessMixin"]


class RedisAccessMixin(RedisBase):
    """Invites, calendar feed tokens and trusted contacts; mixed into ``RedisStore``."""

    # invites

    @translated
    async def create_invite(self, invite: Invite) -> None:
        if not await self._r.set(self._key("invite", invite.id), dump(invite), nx=True):
            raise Conflict(f"invite {invite.id} exists")
        await self._r.set(self._key("invite-token", invite.token_hash), invite.id)
        index = self._key("session", invite.session_id, ":invites")
        await self._r.zadd(index, {invite.id: micros(invite.created_at)})

    @translated
    async def get_invite(self, invite_id: str) -> Invite | None:
        found = await self._r.get(self._key("invite", invite_id))
        return None if found is None else load(Invite, found)

    @translated
    async def get_invite_by_token(self, token_hash: str) -> Invite | None:
        invite_id = await self._r.get(self._key("invite-token", token_hash))
        if invite_id is None:
            return None
        invite = await self.get_invite(texts([invite_id])[0])
        return invite if invite is not None and invite.token_hash == token_hash else None

    @translated
    async def list_invites(self, session_id: str) -> list[Invite]:
        ids = texts(await self._r.zrange(self._key("session", session_id, ":invites"), 0, -1))
        found = await self._load_many(Invite, [self._key("invite", i) for i in ids])
        return [i for i in found if i.session_id == session_id]

    @translated
    async def use_invite(self, invite_id: str, at: datetime) -> Invite | None:
        used: list[Invite] = []

        def use(stored: str) -> str | None:
            invite = load(Invite, stored)
            if invite.revoked_at is not None or invite.expires_at <= at:
                return None
            if invite.uses >= invite.max_uses:
                return None
            used[:] = [replace(invite, uses=invite.uses + 1)]
            return dump(used[0])

        ok = await self._compare_and_set(self._key("invite", invite_id), use)
        return used[0] if ok else None

    @translated
    async def revoke_invite(self, invite_id: str, at: datetime) -> bool:
        def revoke(stored: str) -> str | None:
            invite = load(Invite, stored)
            return None if invite.revoked_at is not None else dump(replace(invite, revoked_at=at))

        return await self._compare_and_set(self._key("invite", invite_id), revoke)

    # calendar feeds

    @translated
    async def set_feed_token(self, user_id: str, token_hash: str) -> None:
        await self._r.set(self._key("feed-token", token_hash), user_id)
        old = await self._r.set(self._key("feed-user", user_id), token_hash, get=True)
        if old is not None and old != token_hash:
            await self._r.delete(self._key("feed-token", texts([old])[0]))

    @translated
    async def get_feed_user(self, token_hash: str) -> str | None:
        user_id = await self._r.get(self._key("feed-token", token_hash))
        if user_id is None:
            return None
        user_id = texts([user_id])[0]
        # A replaced token whose reverse entry outlived an interrupted write stays dead.
        current = await self._r.get(self._key("feed-user", user_id))
        return user_id if current == token_hash else None

    # trusted contacts

    @translated
    async def set_trusted_contacts(self, user_id: str, contacts: tuple[str, ...]) -> None:
        await self._r.set(self._key("trusted", user_id), dump(list(contacts)))

    @translated
    async def get_trusted_contacts(self, user_id: str) -> tuple[str, ...]:
        found = await self._r.get(self._key("trusted", user_id))
        return () if found is None else tuple(load(list[str], found))
