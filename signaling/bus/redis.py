"""``RedisBus``: the ``Bus`` protocol on Redis, for many signaling nodes sharing rooms.

Keys start with the prefix (``cc:sig``) and carry a Redis Cluster hash tag, so every Lua script
(``signaling/bus/scripts.py``) touches keys of one slot::

    cc:sig:{p:<peer>}:seq       string  last seq handed out to the peer (INCR)
    cc:sig:{p:<peer>}:buf       list    the last REPLAY_LIMIT (+ up to TRIM_SLACK) stamped frames
    cc:sig:{p:<peer>}:node      string  id of the node that claimed the peer
    cc:sig:{room:<session>}     hash    peer id -> PeerRecord JSON
    cc:sig:{room:<session>}:lock string random token of the room lock holder (PX lease)
    cc:sig:{idle:<user>}        set     idle peer ids (TV, phone) of the user
    cc:sig:{live:<user>}        zset    family calls live without the user, score = expiry
    cc:sig:{nodes}              zset    node id, score = expiry of its heartbeat (server time)
    cc:sig:node:<node>          channel frames for the peers this node claimed

Commands go through ``RespClient`` (``signaling/bus/resp.py``): one pipelined connection per
node, so a burst of relays shares round trips and no caller waits for a pooled connection.
``get_pair`` (the relay check) is served from ``RoomCache`` (``signaling/bus/room_cache.py``,
Redis client-side caching, invalidated on the subscription connection), so a relay is one
round trip: the send script.

The three peer keys expire ``peer_ttl`` (1 hour) after the last send to an unclaimed peer, or
after the claiming node's last refresh (its reader refreshes them while the claim lasts, and a
send to a claimed peer sets the expiry only of keys it creates), so the keys of peers that left
without a ``forget``, and the claims of a node that died, vanish by themselves. A live call
(``add_live_call``) scores its expiry (``live_call_ttl``, server time) in the user's set, and
the set expires with its newest entry, so calls whose room was never seen empty go too.

``send`` is one script (one round trip, ``EVALSHA``): INCR seq, splice ``"seq":N,`` after the
frame's ``{`` (the bytes ``protocol.stamp_seq`` makes), RPUSH to the buffer (an LTRIM back to
REPLAY_LIMIT once it holds TRIM_SLACK more; ``replay`` reads only the last REPLAY_LIMIT), and if
a node claims the peer, PUBLISH ``<peer>\\n<seq>\\n<frame>`` on that node's channel. One script
per send and one subscription per node keep each peer's frames in seq order from end to end.
``send_now`` (``FastBus``, the fast lane) writes the same script at once and leaves its reply
to a callback that reports only failures; it declines until ``send`` has loaded the script on
the current connection, so a NOSCRIPT retry cannot reorder frames.

Each node delivers its claimed peers' frames from its channel with a ``ChannelReader``
(``signaling/bus/channel.py``, which also resyncs them after a lost subscription).

``replay`` reads the counter and the buffer in one script and takes each frame's seq from its
``{"seq":N,`` prefix. Room locks are ``SET NX PX`` with a random token, retried for
``lock_wait`` seconds (then ``RoomLockTimeout``) and released only by their token.

Connection failures become ``BusUnavailable`` at once (no pool to wait for: a relay that cannot
reach Redis errors, it does not hang).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import msgspec

from signaling.bus import scripts
from signaling.bus.base import (
    LIVE_CALL_TTL,
    REPLAY_LIMIT,
    BusUnavailable,
    Deliver,
    Delivered,
    Failed,
    PeerRecord,
    check_frame,
    kept_after,
)
from signaling.bus.channel import ChannelReader, seq_of
from signaling.bus.resp import RespClient
from signaling.bus.room_cache import RoomCache, decode_record
from signaling.bus.wire import Prepared

if TYPE_CHECKING:
    from signaling.bus.base import Bus, FastBus

__all__ = ["RedisBus", "RoomLockTimeout"]

log = logging.getLogger(__name__)

PEER_TTL = 3600.0  # seconds the keys of a peer live after its last send (or claim refresh)
LOCK_WAIT = 5.0  # seconds room_lock waits before RoomLockTimeout
LOCK_LEASE = 10.0  # seconds a room lock lasts if its holder dies
CLAIM_REFRESH = 10.0  # seconds between refreshes of this node's claims (at most peer_ttl / 3)
SEND_COMMANDS = 16_384  # peers whose send_now command is kept packed (about 250 bytes each)


class RoomLockTimeout(BusUnavailable, TimeoutError):
    """A room lock was not free within the wait (its holder is slow, or died with it)."""


class RedisBus:
    """Rooms and frames of all nodes in Redis. The bus owns its client: ``close`` closes it."""

    def __init__(
        self,
        client: RespClient,
        node_id: str | None = None,
        prefix: str = "cc:sig",
        *,
        peer_ttl: float = PEER_TTL,
        lock_wait: float = LOCK_WAIT,
        lock_lease: float = LOCK_LEASE,
        live_call_ttl: float = LIVE_CALL_TTL,
    ) -> None:
        self._r = client
        self._node_id = node_id or f"node-{uuid.uuid4().hex[:12]}"
        if "\n" in self._node_id:
            raise ValueError("a node id is one line")
        self._prefix = prefix
        self._ttl_ms = max(1, int(peer_ttl * 1000))
        self._refresh_every = min(CLAIM_REFRESH, peer_ttl / 3)
        self._lock_wait = lock_wait
        self._lease_ms = max(1, int(lock_lease * 1000))
        self._live_call_ttl_ms = max(1, int(live_call_ttl * 1000))
        self._channel_prefix = f"{prefix}:node:"
        self._channel = self._channel_prefix + self._node_id
        self._rooms = RoomCache(client)
        self._reader = ChannelReader(
            client,
            self._node_id,
            self._channel,
            self._peer_keys,
            self._rooms,
            ttl_ms=self._ttl_ms,
            refresh_every=self._refresh_every,
        )
        self._claims = self._reader.claims
        self._send_commands: dict[str, Prepared] = {}  # peer -> its packed SEND (send_now)

    @classmethod
    async def connect(
        cls,
        url: str,
        node_id: str | None = None,
        *,
        peer_ttl: float = PEER_TTL,
        lock_wait: float = LOCK_WAIT,
        lock_lease: float = LOCK_LEASE,
        live_call_ttl: float = LIVE_CALL_TTL,
    ) -> RedisBus:
        """Open a client on ``url`` and check that the server answers."""
        client = RespClient(url)
        bus = cls(
            client,
            node_id,
            peer_ttl=peer_ttl,
            lock_wait=lock_wait,
            lock_lease=lock_lease,
            live_call_ttl=live_call_ttl,
        )
        try:
            await bus.ping()
        except BaseException:
            await bus.close()
            raise
        return bus

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def shared(self) -> bool:
        return True

    def _peer_keys(self, peer_id: str) -> tuple[str, str, str]:
        tag = f"{self._prefix}:{{p:{peer_id}}}"
        return f"{tag}:seq", f"{tag}:buf", f"{tag}:node"

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}:{{{kind}:{ident}}}"

    async def start(self, deliver: Deliver, delivered: Delivered | None = None) -> None:
        """Subscribe to this node's channel; returns once subscribed (or ``BusUnavailable``)."""
        await self._reader.start(deliver, delivered)

    async def close(self) -> None:
        await self._reader.stop()
        await self._r.close()

    async def ping(self) -> None:
        await self._r.call(b"PING")

    # frames

    async def send(self, peer_id: str, frame: bytes) -> int:
        check_frame(frame)
        if "\n" in peer_id:
            raise ValueError("a peer id is one line")
        args = (frame, REPLAY_LIMIT, self._ttl_ms, self._channel_prefix, peer_id)
        return int(await self._r.evalsha(scripts.SEND, self._peer_keys(peer_id), args))

    def send_now(self, peer_id: str, frame: bytes, failed: Failed, ref: str | None) -> bool:
        """``send`` written at once, its reply unawaited (``FastBus``): a failure goes to
        ``failed``. False when it cannot go now (no connection, or the script not yet loaded
        on it): then ``send``."""
        if not frame.startswith(b'{"'):
            return False  # send raises for it
        command = self._send_commands.get(peer_id)
        if command is None:
            if "\n" in peer_id:
                return False  # send raises for it
            command = self._prepare_send(peer_id)
        return self._r.prepared_now(command, frame, failed, ref)

    def _prepare_send(self, peer_id: str) -> Prepared:
        """The peer's ``send`` command, packed but for the frame (kept for the next sends)."""
        commands = self._send_commands
        if len(commands) >= SEND_COMMANDS:
            commands.clear()  # bounded: peers come and go; a packing costs a couple of us
        after = (REPLAY_LIMIT, self._ttl_ms, self._channel_prefix, peer_id)
        command = commands[peer_id] = Prepared.of(scripts.SEND, self._peer_keys(peer_id), after)
        return command

    async def claim(self, peer_id: str) -> None:
        fresh = peer_id not in self._claims
        if fresh:
            self._claims[peer_id] = None  # the reader delivers from now on, tracking the seq
        try:
            args = (self._node_id, self._ttl_ms)
            seq = int(await self._r.evalsha(scripts.CLAIM, self._peer_keys(peer_id), args))
        except BaseException:
            if fresh and peer_id in self._claims and self._claims[peer_id] is None:
                del self._claims[peer_id]
            raise
        if peer_id in self._claims:
            self._claims[peer_id] = max(self._claims[peer_id] or 0, seq)

    async def release(self, peer_id: str) -> None:
        self._claims.pop(peer_id, None)
        node_key = self._peer_keys(peer_id)[2]
        await self._r.evalsha(scripts.RELEASE, (node_key,), (self._node_id,))

    async def replay(self, peer_id: str, after_seq: int) -> list[bytes] | None:
        seq_key, buf_key, _ = self._peer_keys(peer_id)
        seq, frames = await self._r.evalsha(scripts.REPLAY, (seq_key, buf_key), (REPLAY_LIMIT,))
        kept = [(seq_of(f), f) for f in frames]
        return kept_after(int(seq), kept, after_seq)

    async def forget(self, peer_id: str) -> None:
        self._claims.pop(peer_id, None)
        await self._r.call(b"DEL", *self._peer_keys(peer_id))

    # rooms

    def room_lock(self, session_id: str) -> AbstractAsyncContextManager[None]:
        return self._room_lock(session_id)

    @asynccontextmanager
    async def _room_lock(self, session_id: str) -> AsyncIterator[None]:
        key = f"{self._key('room', session_id)}:lock"
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lock_wait
        pause = 0.002
        while not await self._r.call(b"SET", key, token, b"NX", b"PX", self._lease_ms):
            if loop.time() >= deadline:
                raise RoomLockTimeout(f"room lock busy for {self._lock_wait}s")
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.05)
        try:
            yield
        finally:
            try:
                if not await self._r.evalsha(scripts.RELEASE, (key,), (token,)):
                    log.warning("bus %s: room lock of %s had expired", self._node_id, session_id)
            except BusUnavailable as exc:  # the lease ends it
                log.warning("bus %s: room lock not released: %s", self._node_id, exc)

    async def room_peers(self, session_id: str) -> list[PeerRecord]:
        values = await self._r.call(b"HVALS", self._key("room", session_id))
        records = [decode_record(v) for v in values]
        return sorted(records, key=lambda r: (r.since, r.peer_id))

    async def put_peer(self, record: PeerRecord) -> None:
        key = self._key("room", record.session_id)
        self._rooms.forget(key)
        await self._r.call(b"HSET", key, record.peer_id, msgspec.json.encode(record))

    async def get_peer(self, session_id: str, peer_id: str) -> PeerRecord | None:
        value = await self._r.call(b"HGET", self._key("room", session_id), peer_id)
        return None if value is None else decode_record(value)

    async def get_pair(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        return await self._rooms.get_pair(self._key("room", session_id), a, b)

    def get_pair_now(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None] | None:
        """``get_pair`` from this node's cache (``FastBus``); None when it is not there."""
        return self._rooms.get_pair_now(self._key("room", session_id).encode(), a, b)

    async def remove_peer(self, session_id: str, peer_id: str) -> None:
        key = self._key("room", session_id)
        self._rooms.forget(key)
        await self._r.call(b"HDEL", key, peer_id)

    # ringing

    async def add_idle(self, user_id: str, peer_id: str) -> None:
        await self._r.call(b"SADD", self._key("idle", user_id), peer_id)

    async def remove_idle(self, user_id: str, peer_id: str) -> None:
        await self._r.call(b"SREM", self._key("idle", user_id), peer_id)

    async def idle_peers(self, user_id: str) -> list[str]:
        return sorted(
            m.decode() for m in await self._r.call(b"SMEMBERS", self._key("idle", user_id))
        )

    async def add_live_call(self, user_id: str, session_id: str) -> None:
        key = self._key("live", user_id)
        await self._r.evalsha(scripts.ADD_UNTIL, (key,), (session_id, self._live_call_ttl_ms))

    async def remove_live_call(self, user_id: str, session_id: str) -> None:
        await self._r.call(b"ZREM", self._key("live", user_id), session_id)

    async def live_calls(self, user_id: str) -> list[str]:
        members = await self._r.evalsha(scripts.LIVE, (self._key("live", user_id),), ())
        return sorted(m.decode() for m in members)

    # liveness

    async def heartbeat(self, ttl_seconds: float) -> None:
        await self._r.evalsha(scripts.HEARTBEAT, (self._key_nodes,), (self._node_id, ttl_seconds))

    async def live_nodes(self) -> set[str]:
        return {m.decode() for m in await self._r.evalsha(scripts.LIVE, (self._key_nodes,), ())}

    @property
    def _key_nodes(self) -> str:
        return f"{self._prefix}:{{nodes}}"


if TYPE_CHECKING:

    def _conforms(bus: RedisBus) -> Bus:  # mypy checks the protocols here
        return bus

    def _is_fast(bus: RedisBus) -> FastBus:
        return bus
