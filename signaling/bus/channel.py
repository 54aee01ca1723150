"""``ChannelReader``: a node's claimed peers, and their frames read from its Redis channel.

Each node reads its channel on a connection of its own (``Subscriber``): the protocol callback
calls ``deliver`` for the peers it claimed, synchronously, remembering the last seq delivered
per peer. When the subscription is (re)established, and when the periodic claim refresh finds a
claim gone, the reader *resyncs* each claimed peer with one script: re-assert the claim if it
is missing, read the counter and the buffer, and deliver the buffered frames after the last one
delivered; channel messages arriving meanwhile are held and handed on after it. Frames
published while the reader was disconnected are thus delivered late, never lost; one delivered
again by the channel after a resync has seq <= last and is dropped.

A resync that finds the claim missing (Redis restarted without persistence, was flushed, or the
keys expired) or the counter below the last seq delivered (a restart from an older snapshot)
treats it as a *reset*: the peer's seq started again at 1, every buffered frame is delivered,
and the receiving side must accept a seq lower than the one it saw last. Run Redis without
persistence or with AOF; an RDB rollback may make a few seqs repeat.

The reader never gives up: it reconnects with backoff and logs ids only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from signaling.bus import scripts
from signaling.bus.base import BusUnavailable, Deliver, Delivered
from signaling.bus.resp import RespClient
from signaling.bus.room_cache import RoomCache
from signaling.bus.subscriber import Subscriber
from signaling.bus.wire import Script

__all__ = ["ChannelReader", "parse_message", "seq_of"]

log = logging.getLogger(__name__)

START_TIMEOUT = 5.0  # seconds start waits for the first subscription
RECONNECT_MIN, RECONNECT_MAX = 0.05, 2.0
BATCH = 256  # scripts in flight at once when refreshing or resyncing many peers


def seq_of(frame: bytes) -> int:
    """The seq of a stamped frame (``{"seq":N,...``)."""
    return int(frame[7 : frame.index(b",", 7)])


def parse_message(data: bytes) -> tuple[str, int, bytes]:
    """A channel message ``<peer>\\n<seq>\\n<frame>`` -> (peer id, seq, frame)."""
    peer, seq, frame = data.split(b"\n", 2)
    return peer.decode(), int(seq), frame


class ChannelReader:
    """Delivers the frames of the peers in ``claims`` (peer -> last seq delivered here, None
    while its claim is being written), from ``channel``, resyncing them as needed."""

    def __init__(
        self,
        client: RespClient,
        node_id: str,
        channel: str,
        peer_keys: Callable[[str], tuple[str, str, str]],
        rooms: RoomCache,
        *,
        ttl_ms: int,
        refresh_every: float,
    ) -> None:
        self._r = client
        self._node_id = node_id
        self._channel = channel
        self._peer_keys = peer_keys
        self._rooms = rooms
        self._ttl_ms = ttl_ms
        self._refresh_every = refresh_every
        self.claims: dict[str, int | None] = {}
        self._deliver: Deliver | None = None
        self._delivered: Delivered | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, deliver: Deliver, delivered: Delivered | None) -> None:
        """Subscribe; returns once subscribed (or ``BusUnavailable``)."""
        if self._task is not None:
            raise RuntimeError("the bus is already started")
        self._deliver = deliver
        self._delivered = delivered
        self._task = asyncio.create_task(self._read(), name=f"bus-reader-{self._node_id}")
        try:
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise BusUnavailable("redis is unreachable: no subscription") from None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("bus %s: reader ended: %r", self._node_id, task.exception())
        self._deliver = None
        self._ready.clear()

    async def _read(self) -> None:
        """Deliver this node's frames, forever: reconnect, resubscribe and resync as needed."""
        delay = RECONNECT_MIN
        subscribed_before = False
        while True:
            sub = Subscriber(
                self._r,
                self._channel,
                self._on_message,
                self._rooms.invalidate,
                after_messages=self._delivered,
            )
            try:
                await sub.subscribe()
                self._rooms.attach(sub)
                if subscribed_before:
                    log.warning("bus %s: resubscribed, resyncing", self._node_id)
                subscribed_before = True
                with sub.hold():
                    await self._resync(list(self.claims))
                delay = RECONNECT_MIN
                self._ready.set()
                await sub.watch(self._refresh_every, functools.partial(self._refresh, sub))
            except BusUnavailable as exc:
                log.warning(
                    "bus %s: subscription lost (%s), reconnecting in %.2fs",
                    self._node_id,
                    exc,
                    delay,
                )
            except Exception:
                log.exception("bus %s: reader failed, restarting it", self._node_id)
            finally:
                self._rooms.attach(None)
                sub.close()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX)

    def _on_message(self, data: bytes) -> None:
        try:
            peer_id, seq, frame = parse_message(data)
        except ValueError:
            log.warning("bus %s: malformed channel message", self._node_id)
            return
        claims = self.claims
        if peer_id not in claims:
            return  # released here, or moved away: the new node delivers it
        last = claims[peer_id]
        if last is not None and seq <= last:
            return  # already delivered by a resync
        claims[peer_id] = seq
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
        self, script: Script, peers: list[str], args: tuple[str | int, ...]
    ) -> Iterable[tuple[str, Any]]:
        """Run one script per peer, ``BATCH`` at a time (pipelined); (peer, reply) pairs."""
        replies: list[Any] = []
        for start in range(0, len(peers), BATCH):
            replies += await asyncio.gather(
                *(
                    self._r.evalsha(script, self._peer_keys(peer_id), args)
                    for peer_id in peers[start : start + BATCH]
                )
            )
        return zip(peers, replies, strict=True)

    async def _refresh(self, sub: Subscriber) -> None:
        """Keep this node's claims (and their peers' keys) alive; resync those found gone."""
        args = (self._node_id, self._ttl_ms)
        replies = await self._scripts(scripts.TOUCH, list(self.claims), args)
        lost = [peer_id for peer_id, ok in replies if not ok]
        if lost:
            log.warning("bus %s: %d claims gone from redis, resyncing", self._node_id, len(lost))
            with sub.hold():
                await self._resync(lost)

    async def _resync(self, peers: list[str]) -> None:
        """Deliver what the channel may have missed; see the module docstring."""
        args = (self._node_id, self._ttl_ms)
        for peer_id, reply in await self._scripts(scripts.RESYNC, peers, args):
            if peer_id not in self.claims:
                continue  # released meanwhile
            if int(reply[0]) == 2:
                del self.claims[peer_id]
                log.info("bus %s: peer %s moved to another node", self._node_id, peer_id)
                continue
            seq, frames = int(reply[1]), reply[2]
            last = self.claims[peer_id]
            if last is None:  # a claim being written: it sets the mark itself
                self.claims[peer_id] = seq
                continue
            if int(reply[0]) == 1 or seq < last:
                log.warning("bus %s: seq of peer %s was reset", self._node_id, peer_id)
                last = 0
            for frame in frames:
                n = seq_of(frame)
                if n > last and peer_id in self.claims:
                    last = n
                    self.claims[peer_id] = n
                    self._call(peer_id, n, frame)
            if peer_id in self.claims:
                self.claims[peer_id] = last
