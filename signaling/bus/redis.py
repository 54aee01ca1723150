"""``RedisBus``: the ``Bus`` protocol on Redis, for many signaling nodes sharing rooms.

Keys start with the prefix (``cc:sig``) and carry a Redis Cluster hash tag, so every Lua script
touches keys of one slot::

    cc:sig:{p:<peer>}:seq       string  last seq handed out to the peer (INCR)
    cc:sig:{p:<peer>}:buf       list    the last REPLAY_LIMIT frames, already stamped with seq
    cc:sig:{p:<peer>}:node      string  id of the node that claimed the peer
    cc:sig:{room:<session>}     hash    peer id -> PeerRecord JSON
    cc:sig:{room:<session>}:lock string random token of the room lock holder (PX lease)
    cc:sig:{idle:<user>}        set     idle peer ids (TV, phone) of the user
    cc:sig:{nodes}              zset    node id, score = expiry of its heartbeat (server time)
    cc:sig:node:<node>          channel frames for the peers this node claimed

The three peer keys expire ``peer_ttl`` (1 hour) after the last send; the reader of the
claiming node refreshes them while the claim lasts, so the keys of peers that left without a
``forget``, and the claims of a node that died, vanish by themselves.

``send`` is one script (one round trip): INCR seq, splice ``"seq":N,`` after the frame's ``{``
(the bytes ``protocol.stamp_seq`` makes), RPUSH and LTRIM the buffer, and if a node claims the
peer, PUBLISH ``<peer>\\n<seq>\\n<frame>`` on that node's channel. One script per send and one
reader per node keep each peer's frames in seq order from end to end.

Each node reads its channel in one background task (``start``) and calls ``deliver`` for the
peers it claimed, remembering the last seq delivered per peer (``deliver`` is synchronous and
runs in that task: it should only enqueue). When the subscription is (re)established, and
when the periodic claim refresh finds a claim gone, the reader *resyncs*
each claimed peer with one script: re-assert the claim if it is missing, read the counter and
the buffer, and deliver the buffered frames after the last one delivered. Frames published
while the reader was disconnected are thus delivered late, never lost; one delivered again by
the channel after a resync has seq <= last and is dropped.

A resync that finds the claim missing (Redis restarted without persistence, was flushed, or the
keys expired) or the counter below the last seq delivered (a restart from an older snapshot)
treats it as a *reset*: the peer's seq started again at 1, every buffered frame is delivered,
and the receiving side must accept a seq lower than the one it saw last. Run Redis without
persistence or with AOF; an RDB rollback may make a few seqs repeat.

``replay`` reads the counter and the buffer in one transaction (``MULTI``) and takes each
frame's seq from its ``{"seq":N,`` prefix. Room locks are ``SET NX PX`` with a random token,
retried for ``lock_wait`` seconds (then ``RoomLockTimeout``) and released only by their token.

Connection failures become ``BusUnavailable``; the reader itself never gives up, it reconnects
with backoff and logs ids only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import msgspec
import redis.asyncio as aredis
import redis.exceptions

from signaling.bus.base import REPLAY_LIMIT, BusUnavailable, Deliver, PeerRecord

if TYPE_CHECKING:
    from signaling.bus.base import Bus

__all__ = ["RedisBus", "RoomLockTimeout"]

log = logging.getLogger(__name__)

PEER_TTL = 3600.0  # seconds the keys of a peer live after its last send (or claim refresh)
LOCK_WAIT = 5.0  # seconds room_lock waits before RoomLockTimeout
LOCK_LEASE = 10.0  # seconds a room lock lasts if its holder dies
START_TIMEOUT = 5.0  # seconds start waits for the first subscription
POLL = 0.5  # seconds the reader waits for a message before doing its chores
PING_EVERY = 5.0  # an idle subscription is pinged this often; silent for 3x: reconnect
CLAIM_REFRESH = 10.0  # seconds between refreshes of this node's claims (at most peer_ttl / 3)
RECONNECT_MIN, RECONNECT_MAX = 0.05, 2.0
POOL_SIZE, POOL_WAIT = 64, 5.0  # connections of connect()'s client; seconds to wait for one
BATCH = 256  # scripts per pipeline when refreshing or resyncing many peers

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# KEYS seq, buf, node; ARGV frame, replay limit, ttl (ms), channel prefix, peer id.
_SEND = """
local seq = redis.call('INCR', KEYS[1])
local stamped = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], stamped)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local node = redis.call('GET', KEYS[3])
if node then
  redis.call('PUBLISH', ARGV[4] .. node, ARGV[5] .. '\\n' .. seq .. '\\n' .. stamped)
end
return seq
"""
# KEYS seq, buf, node; ARGV node id, ttl (ms). Returns the seq at the time of the claim.
_CLAIM = """
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return tonumber(redis.call('GET', KEYS[1]) or '0')
"""
# KEYS key; ARGV owner. Deletes the key if it still names the owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# KEYS seq, buf, node; ARGV node id, ttl (ms). 1 if the claim is still ours (keys refreshed).
_TOUCH = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""
# KEYS seq, buf, node; ARGV node id, ttl (ms). {state, seq, frames}: state 0 the claim is ours,
# 1 it was missing and is restored, 2 another node has it (then nothing else).
_RESYNC = """
local owner = redis.call('GET', KEYS[3])
local state = 0
if not owner then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  state = 1
elseif owner ~= ARGV[1] then
  return {2}
end
return {state, tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
# KEYS nodes; ARGV node id, ttl (s). Scores are server time, so node clocks need not agree.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return 1
"""
# KEYS nodes.
_LIVE = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, '+inf')
"""


class RoomLockTimeout(BusUnavailable, TimeoutError):
    """A room lock was not free within the wait (its holder is slow, or died with it)."""


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _translated(
    method: Callable[Concatenate[RedisBus, _P], Awaitable[_T]],
) -> Callable[Concatenate[RedisBus, _P], Coroutine[Any, Any, _T]]:
    """Turn Redis connection failures into ``BusUnavailable``."""

    async def wrapper(self: RedisBus, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            log.warning("bus %s: redis unreachable: %s", self.node_id, type(exc).__name__)
            raise BusUnavailable("redis is unreachable") from exc

    functools.update_wrapper(wrapper, method)
    return wrapper


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The next two are the same rules as in MemoryBus (backends depend only on the protocol).


def check_frame(frame: bytes) -> None:
    """``frame`` must be a compact, non-empty JSON object (``seq`` is spliced in after ``{``)."""
    if not frame.startswith(b'{"'):
        raise ValueError('a frame must be a compact, non-empty JSON object (starting with {")')


def kept_after(seq: int, kept: list[tuple[int, bytes]], after_seq: int) -> list[bytes] | None:
    """The replay answer: frames after ``after_seq``, or None when some of them are gone."""
    if after_seq > seq:
        return None  # a seq never handed out: the counter was reset since
    if after_seq < seq and (not kept or kept[0][0] > after_seq + 1):
        return None
    return [frame for n, frame in kept if n > after_seq]


def seq_of(frame: bytes) -> int:
    """The seq of a stamped frame (``{"seq":N,...``)."""
    return int(frame[7 : frame.index(b",", 7)])


def parse_message(data: str | bytes) -> tuple[str, int, bytes]:
    """A channel message ``<peer>\\n<seq>\\n<frame>`` -> (peer id, seq, frame)."""
    peer, seq, frame = _bytes(data).split(b"\n", 2)
    return peer.decode(), int(seq), frame


class RedisBus:
    """Rooms and frames of all nodes in Redis. The bus owns its client: ``close`` closes it."""

    def __init__(
        self,
        client: aredis.Redis,
        node_id: str | None = None,
        prefix: str = "cc:sig",
        *,
        peer_ttl: float = PEER_TTL,
        lock_wait: float = LOCK_WAIT,
        lock_lease: float = LOCK_LEASE,
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
        self._send_script = client.register_script(_SEND)
        self._claim_script = client.register_script(_CLAIM)
        self._release_script = client.register_script(_RELEASE)
        self._touch_script = client.register_script(_TOUCH)
        self._resync_script = client.register_script(_RESYNC)
        self._heartbeat_script = client.register_script(_HEARTBEAT)
        self._live_script = client.register_script(_LIVE)
        # Claimed peers -> last seq delivered here (None: the claim is still being written).
        self._claims: dict[str, int | None] = {}
        self._deliver: Deliver | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        url: str,
        node_id: str | None = None,
        *,
        peer_ttl: float = PEER_TTL,
        lock_wait: float = LOCK_WAIT,
        lock_lease: float = LOCK_LEASE,
    ) -> RedisBus:
        """Open a client on ``url`` and check that the server answers.

        The client's pool makes a burst of sends wait for a free connection (up to
        ``POOL_WAIT`` seconds) instead of failing once ``POOL_SIZE`` are in use.
        """
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=POOL_WAIT
        )
        client = aredis.Redis.from_pool(pool)
        bus = cls(client, node_id, peer_ttl=peer_ttl, lock_wait=lock_wait, lock_lease=lock_lease)
        try:
            await bus.ping()
        except BaseException:
            await bus.close()
            raise
        return bus

    @property
    def node_id(self) -> str:
        return self._node_id

    def _peer_keys(self, peer_id: str) -> list[str]:
        tag = f"{self._prefix}:{{p:{peer_id}}}"
        return [f"{tag}:seq", f"{tag}:buf", f"{tag}:node"]

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}:{{{kind}:{ident}}}"

    @property
    def _channel_prefix(self) -> str:
        return f"{self._prefix}:node:"

    @property
    def _channel(self) -> str:
        return self._channel_prefix + self._node_id

    async def start(self, deliver: Deliver) -> None:
        """Subscribe to this node's channel; returns once subscribed (or ``BusUnavailable``)."""
        if self._reader is not None:
            raise RuntimeError("the bus is already started")
        self._deliver = deliver
        self._reader = asyncio.create_task(self._read(), name=f"bus-reader-{self._node_id}")
        try:
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)
        except TimeoutError:
            await self._stop_reader()
            raise BusUnavailable("redis is unreachable: no subscription") from None

    async def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        # On Python 3.11 a cancellation can be lost inside redis-py: it writes commands under
        # asyncio.wait_for (socket_timeout), which returns the result instead of raising when
        # the write finishes as the cancel arrives (CPython gh-86296). Cancel until done.
        while reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader], timeout=0.1)
        if reader is not None and not reader.cancelled() and reader.exception() is not None:
            log.error("bus %s: reader ended: %r", self._node_id, reader.exception())
        self._deliver = None
        self._ready.clear()

    async def close(self) -> None:
        await self._stop_reader()
        await self._r.aclose()

    @_translated
    async def ping(self) -> None:
        await self._r.ping()

    # frames

    @_translated
    async def send(self, peer_id: str, frame: bytes) -> int:
        check_frame(frame)
        if "\n" in peer_id:
            raise ValueError("a peer id is one line")
        args: list[bytes | str | int] = [
            frame,
            REPLAY_LIMIT,
            self._ttl_ms,
            self._channel_prefix,
            peer_id,
        ]
        return int(await self._send_script(keys=self._peer_keys(peer_id), args=args))

    @_translated
    async def claim(self, peer_id: str) -> None:
        fresh = peer_id not in self._claims
        if fresh:
            self._claims[peer_id] = None  # the reader delivers from now on, tracking the seq
        try:
            args: list[str | int] = [self._node_id, self._ttl_ms]
            seq = int(await self._claim_script(keys=self._peer_keys(peer_id), args=args))
        except BaseException:
            if fresh and peer_id in self._claims and self._claims[peer_id] is None:
                del self._claims[peer_id]
            raise
        if peer_id in self._claims:
            self._claims[peer_id] = max(self._claims[peer_id] or 0, seq)

    @_translated
    async def release(self, peer_id: str) -> None:
        self._claims.pop(peer_id, None)
        await self._release_script(keys=self._peer_keys(peer_id)[2:], args=[self._node_id])

    @_translated
    async def replay(self, peer_id: str, after_seq: int) -> list[bytes] | None:
        seq_key, buf_key, _ = self._peer_keys(peer_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.get(seq_key)
            pipe.lrange(buf_key, 0, -1)
            seq, frames = await pipe.execute()
        kept = [(seq_of(f), f) for f in map(_bytes, frames)]
        return kept_after(int(seq or 0), kept, after_seq)

    @_translated
    async def forget(self, peer_id: str) -> None:
        self._claims.pop(peer_id, None)
        await self._r.delete(*self._peer_keys(peer_id))

    # the reader

    async def _read(self) -> None:
        """Deliver this node's frames, forever: reconnect, resubscribe and resync as needed."""
        loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN
        subscribed_before = False
        while True:
            pubsub = self._r.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                last_seen = last_ping = next_refresh = loop.time()
                while True:
                    wait = max(0.0, min(POLL, next_refresh - loop.time()))
                    message = await pubsub.get_message(timeout=wait)
                    now = loop.time()
                    if message is not None:
                        last_seen = now
                        kind = _text(message["type"])
                        if kind == "message":
                            self._on_message(message["data"])
                        elif kind == "subscribe":
                            if subscribed_before:
                                log.warning("bus %s: resubscribed, resyncing", self._node_id)
                            subscribed_before = True
                            await self._resync(list(self._claims))
                            next_refresh = now + self._refresh_every
                            delay = RECONNECT_MIN
                            self._ready.set()
                    elif now - last_seen > 3 * PING_EVERY:
                        raise redis.exceptions.ConnectionError("no answer to PING")
                    elif now - max(last_seen, last_ping) > PING_EVERY:
                        last_ping = now
                        await pubsub.ping()
                    if now >= next_refresh:
                        next_refresh = now + self._refresh_every
                        await self._refresh()
            except _CONNECTION_ERRORS as exc:
                log.warning(
                    "bus %s: subscription lost (%s), reconnecting in %.2fs",
                    self._node_id,
                    type(exc).__name__,
                    delay,
                )
            except Exception:
                log.exception("bus %s: reader failed, restarting it", self._node_id)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX)

    def _on_message(self, data: str | bytes) -> None:
        try:
            peer_id, seq, frame = parse_message(data)
        except ValueError:
            log.warning("bus %s: malformed channel message", self._node_id)
            return
        if peer_id not in self._claims:
            return  # released here, or moved away: the new node delivers it
        last = self._claims[peer_id]
        if last is not None and seq <= last:
            return  # already delivered by a resync
        self._claims[peer_id] = seq
        self._call(peer_id, seq, frame)

    def _call(self, peer_id: str, seq: int, frame: bytes) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        try:
            deliver(peer_id, seq, frame)
        except Exception:
            log.exception("bus %s: deliver failed for peer %s seq %d", self._node_id, peer_id, seq)

    async def _scripts(
        self, script: Any, peers: list[str], args: list[str | int]
    ) -> Iterable[tuple[str, Any]]:
        """Run one script per peer, ``BATCH`` per pipeline; (peer, reply) pairs."""
        replies: list[Any] = []
        for start in range(0, len(peers), BATCH):
            async with self._r.pipeline(transaction=False) as pipe:
                for peer_id in peers[start : start + BATCH]:
                    await script(keys=self._peer_keys(peer_id), args=args, client=pipe)
                replies += await pipe.execute()
        return zip(peers, replies, strict=True)

    async def _refresh(self) -> None:
        """Keep this node's claims (and their peers' keys) alive; resync those found gone."""
        args: list[str | int] = [self._node_id, self._ttl_ms]
        replies = await self._scripts(self._touch_script, list(self._claims), args)
        lost = [peer_id for peer_id, ok in replies if not ok]
        if lost:
            log.warning("bus %s: %d claims gone from redis, resyncing", self._node_id, len(lost))
            await self._resync(lost)

    async def _resync(self, peers: list[str]) -> None:
        """Deliver what the channel may have missed; see the module docstring."""
        args: list[str | int] = [self._node_id, self._ttl_ms]
        for peer_id, reply in await self._scripts(self._resync_script, peers, args):
            if peer_id not in self._claims:
                continue  # released meanwhile
            if int(reply[0]) == 2:
                del self._claims[peer_id]
                log.info("bus %s: peer %s moved to another node", self._node_id, peer_id)
                continue
            seq, frames = int(reply[1]), [_bytes(f) for f in reply[2]]
            last = self._claims[peer_id]
            if last is None:  # a claim being written: it sets the mark itself
                self._claims[peer_id] = seq
                continue
            if int(reply[0]) == 1 or seq < last:
                log.warning("bus %s: seq of peer %s was reset", self._node_id, peer_id)
                last = 0
            for frame in frames:
                n = seq_of(frame)
                if n > last and peer_id in self._claims:
                    last = n
                    self._claims[peer_id] = n
                    self._call(peer_id, n, frame)
            if peer_id in self._claims:
                self._claims[peer_id] = last

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
        while not await self._try_lock(key, token):
            if loop.time() >= deadline:
                raise RoomLockTimeout(f"room lock busy for {self._lock_wait}s")
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.05)
        try:
            yield
        finally:
            try:
                if not await self._release_script(keys=[key], args=[token]):
                    log.warning("bus %s: room lock of %s had expired", self._node_id, session_id)
            except _CONNECTION_ERRORS as exc:  # the lease ends it
                log.warning("bus %s: room lock not released: %s", self._node_id, type(exc).__name__)

    @_translated
    async def _try_lock(self, key: str, token: str) -> bool:
        return bool(await self._r.set(key, token, nx=True, px=self._lease_ms))

    @_translated
    async def room_peers(self, session_id: str) -> list[PeerRecord]:
        values = await self._r.hvals(self._key("room", session_id))
        records = [msgspec.json.decode(_bytes(v), type=PeerRecord) for v in values]
        return sorted(records, key=lambda r: (r.since, r.peer_id))

    @_translated
    async def put_peer(self, record: PeerRecord) -> None:
        key = self._key("room", record.session_id)
        await self._r.hset(key, record.peer_id, msgspec.json.encode(record))

    @_translated
    async def get_peer(self, session_id: str, peer_id: str) -> PeerRecord | None:
        value = await self._r.hget(self._key("room", session_id), peer_id)
        return None if value is None else msgspec.json.decode(_bytes(value), type=PeerRecord)

    @_translated
    async def get_pair(
        self, session_id: str, a: str, b: str
    ) -> tuple[PeerRecord | None, PeerRecord | None]:
        first, second = await self._r.hmget(self._key("room", session_id), [a, b])
        return (
            None if first is None else msgspec.json.decode(_bytes(first), type=PeerRecord),
            None if second is None else msgspec.json.decode(_bytes(second), type=PeerRecord),
        )

    @_translated
    async def remove_peer(self, session_id: str, peer_id: str) -> None:
        await self._r.hdel(self._key("room", session_id), peer_id)

    # ringing

    @_translated
    async def add_idle(self, user_id: str, peer_id: str) -> None:
        await self._r.sadd(self._key("idle", user_id), peer_id)

    @_translated
    async def remove_idle(self, user_id: str, peer_id: str) -> None:
        await self._r.srem(self._key("idle", user_id), peer_id)

    @_translated
    async def idle_peers(self, user_id: str) -> list[str]:
        return sorted(_text(m) for m in await self._r.smembers(self._key("idle", user_id)))

    # liveness

    @_translated
    async def heartbeat(self, ttl_seconds: float) -> None:
        await self._heartbeat_script(keys=[self._key_nodes], args=[self._node_id, ttl_seconds])

    @_translated
    async def live_nodes(self) -> set[str]:
        return {_text(m) for m in await self._live_script(keys=[self._key_nodes])}

    @property
    def _key_nodes(self) -> str:
        return f"{self._prefix}:{{nodes}}"


if TYPE_CHECKING:

    def _conforms(bus: RedisBus) -> Bus:  # mypy checks the protocol here
        return bus
