"""``RoomCache``: the peer records of the relay check, kept on the node while Redis tracks them.

Relaying a message reads both peers' records (``get_pair``) and then sends (the send script):
two round trips. Room records change rarely (join, admit, leave, a dropped socket), so the
records ``get_pair`` read are kept here with Redis *client-side caching* (``CLIENT TRACKING``,
Redis 6+): the command connection has tracking ``ON ... OPTIN`` redirected to the node's
subscription connection, each ``HMGET`` of the relay check is preceded by ``CLIENT CACHING
yes``, and when any client changes a room hash Redis sends its key on ``__redis__:invalidate``
to the subscription, which drops it here (``invalidate``; None: a flush, drop everything). A
relay whose records are here costs one round trip.

Why a cached record is never staler than the node could tell:

* this node's own changes (``put_peer``, ``remove_peer``) drop the room before they are sent;
* another node's change reaches the subscription connection before any frame that node (or
  anyone) publishes afterwards, on the same connection, in order: a peer told about a change
  (``admitted``, ``peer-joined``...) is told after the invalidation was applied here;
* a read that was in flight when an invalidation arrived is not kept (``_gen``);
* the cache is used only while both connections of the tracking are the ones it was set up
  on and open: when either is lost (Redis restart, a kill, a new subscription), everything is
  dropped and tracking is set up again on the next relay check.

At most ``MAX_ROOMS`` rooms are kept; past that the cache starts again empty. Only pairs whose
two records exist are kept, so a room holds at most its members: relays aimed at made-up or
departed peer ids are checked against Redis each time (and refused) instead of filling it.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from signaling.bus.base import PeerRecord
from signaling.bus.resp import Connection, RespClient
from signaling.bus.subscriber import Subscriber
from signaling.bus.wire import RespError

__all__ = ["MAX_ROOMS", "RoomCache", "decode_record"]

log = logging.getLogger(__name__)

MAX_ROOMS = 10_000

decode_record = msgspec.json.Decoder(PeerRecord).decode


def _record(value: bytes | None) -> PeerRecord | None:
    return None if value is None else decode_record(value)


def _ignore(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()


class RoomCache:
    """See the module docstring. ``attach`` the node's subscription, then ``get_pair``."""

    def __init__(self, client: RespClient, max_rooms: int = MAX_ROOMS) -> None:
        self._client = client
        self._max_rooms = max_rooms
        self._rooms: dict[bytes, dict[str, PeerRecord]] = {}
        self._gen = 0  # bumped by every invalidation: a read that spans one is not kept
        self._sub: Subscriber | None = None
        self._tracked: Connection | None = None  # the command connection tracking is on
        self._tracked_for: Subscriber | None = None  # ... redirected to this subscription

    def attach(self, sub: Subscriber | None) -> None:
        """A new subscription (or none): invalidations come there from now on."""
        self._sub = sub
        self.clear()

    def clear(self) -> None:
        self._gen += 1
        self._rooms.clear()
        self._tracked = None

    def invalidate(self, keys: list[bytes] | None) -> None:
        """Redis says these room keys changed (None: all of them)."""
        self._gen += 1
        if keys is None:
            self._rooms.clear()
            return
        for key in keys:
            self._rooms.pop(key, None)

    def forget(self, key: str) -> None:
        """This node changes the room ``key``: drop it before the change is sent."""
        self._gen += 1
        self._rooms.pop(key.encode(), None)

    def get_pair_now(
        self, key: bytes, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None] | None:
        """The pair if both records are cached and the tracking holds; else None (then
        ``get_pair`` reads them)."""
        room = self._rooms.get(key)
        if room is None or a not in room or b not in room:
            return None
        conn, sub = self._tracked, self._tracked_for
        if (
            conn is None
            or not conn.is_open
            or sub is not self._sub
            or sub is None
            or not sub.is_open
            or conn is not self._client.current()
        ):
            return None
        return room[a], room[b]

    async def get_pair(
        self, key: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        conn = self._client.current()
        sub = self._sub
        if (
            conn is None
            or sub is None
            or sub.client_id is None
            or not sub.is_open
            or (
                (conn is not self._tracked or sub is not self._tracked_for)
                and not await self._track(conn, sub)
            )
        ):
            first, second = await self._client.call(b"HMGET", key, a, b)
            return _record(first), _record(second)
        name = key.encode()
        room = self._rooms.get(name)
        if room is not None and a in room and b in room:
            return room[a], room[b]
        gen = self._gen
        conn.submit((b"CLIENT", b"CACHING", b"yes")).add_done_callback(_ignore)
        first, second = await conn.submit((b"HMGET", key, a, b))
        mine, theirs = _record(first), _record(second)
        if (
            mine is not None
            and theirs is not None  # no record is not kept: made-up peer ids cannot pile up
            and gen == self._gen
            and conn is self._tracked
            and conn.is_open
            and sub.is_open
        ):
            room = self._rooms.get(name)
            if room is None:
                if len(self._rooms) >= self._max_rooms:
                    self._rooms.clear()
                room = self._rooms[name] = {}
            room[a], room[b] = mine, theirs
        return mine, theirs

    async def _track(self, conn: Connection, sub: Subscriber) -> bool:
        """Turn tracking on for ``conn``, redirected to ``sub``; False if Redis refuses."""
        self.clear()
        client_id = sub.client_id
        if client_id is None:
            return False
        try:
            await conn.submit((b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", client_id, b"OPTIN"))
        except RespError as exc:  # e.g. not allowed by an ACL: read through, every time
            log.warning("room cache: no client-side caching: %s", str(exc).split(" ", 1)[0])
            sub.client_id = None
            return False
        if conn.is_open and sub.is_open and sub is self._sub:
            self._tracked, self._tracked_for = conn, sub
        return self._tracked is conn
