"""The relay check's records kept on the node (``RoomCache``, Redis client-side caching), on a
real redis-server: served without a round trip, and never staler than the node could tell."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest_asyncio

from signaling import protocol
from signaling.bus.base import BusUnavailable, PeerRecord
from signaling.bus.redis import RedisBus
from signaling.bus.resp import RespClient

WAIT = 10.0


def record(peer: str, state: str = "in_call", since: float = 1.0) -> PeerRecord:
    return PeerRecord(peer, "s1", f"usr_{peer}", "patient", None, "node-a", state, since)


class Nodes:
    def __init__(self, url: str) -> None:
        self.url = url
        self.buses: list[RedisBus] = []
        self.admin = RespClient(url)
        self.got: dict[str, list[tuple[str, int, bytes]]] = {}

    async def start(self, node_id: str) -> RedisBus:
        bus = await RedisBus.connect(self.url, node_id)
        self.buses.append(bus)
        inbox = self.got.setdefault(node_id, [])
        await bus.start(lambda peer, seq, frame: inbox.append((peer, seq, frame)))
        return bus

    async def hmgets(self) -> int:
        stats = (await self.admin.call(b"INFO", b"commandstats")).decode()
        for line in stats.splitlines():
            if line.startswith("cmdstat_hmget:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    async def close(self) -> None:
        for bus in self.buses:
            await bus.close()
        await self.admin.close()


@pytest_asyncio.fixture
async def nodes(redis_url: str) -> AsyncIterator[Nodes]:
    made = Nodes(redis_url)
    try:
        yield made
    finally:
        await made.close()


async def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_repeated_relay_check_is_served_without_redis(nodes: Nodes) -> None:
    a = await nodes.start("node-a")
    await a.put_peer(record("p1"))
    await a.put_peer(record("p2"))
    before = await nodes.hmgets()
    for _ in range(20):
        assert await a.get_pair("s1", "p1", "p2") == (record("p1"), record("p2"))
    assert await a.get_pair("s1", "p1", "nobody") == (record("p1"), None)
    assert await nodes.hmgets() - before == 2  # one per distinct pair, then from the cache


async def test_own_changes_are_seen_at_once(nodes: Nodes) -> None:
    a = await nodes.start("node-a")
    await a.put_peer(record("p1", "waiting"))
    await a.put_peer(record("p2"))
    assert (await a.get_pair("s1", "p1", "p2"))[0] == record("p1", "waiting")
    await a.put_peer(record("p1"))
    assert (await a.get_pair("s1", "p1", "p2"))[0] == record("p1")
    await a.remove_peer("s1", "p2")
    assert (await a.get_pair("s1", "p1", "p2"))[1] is None


async def test_a_change_on_another_node_is_seen_before_the_frames_sent_after_it(
    nodes: Nodes,
) -> None:
    a = await nodes.start("node-a")
    b = await nodes.start("node-b")
    await a.claim("guest")
    await b.put_peer(record("guest", "waiting"))
    await b.put_peer(record("host"))
    for n in range(1, 31):
        assert (await a.get_pair("s1", "guest", "host"))[0] is not None  # cached on node A
        state = "in_call" if n % 2 else "waiting"
        await b.put_peer(record("guest", state, since=float(n)))
        await b.send("guest", protocol.encode({"type": "admitted", "n": n}))
        await eventually(lambda n=n: len(nodes.got["node-a"]) == n)  # type: ignore[misc]
        guest, host = await a.get_pair("s1", "guest", "host")
        assert guest == record("guest", state, since=float(n))
        assert host == record("host")


async def test_a_flush_empties_the_cache(nodes: Nodes) -> None:
    a = await nodes.start("node-a")
    await a.put_peer(record("p1"))
    await a.put_peer(record("p2"))
    assert await a.get_pair("s1", "p1", "p2") == (record("p1"), record("p2"))
    await nodes.admin.call(b"FLUSHALL")
    await eventually(lambda: not a._rooms._rooms)
    assert await a.get_pair("s1", "p1", "p2") == (None, None)


async def test_lost_connections_drop_the_cache_and_tracking_comes_back(nodes: Nodes) -> None:
    a = await nodes.start("node-a")
    b = await nodes.start("node-b")
    await b.put_peer(record("p1"))
    await b.put_peer(record("p2"))
    assert await a.get_pair("s1", "p1", "p2") == (record("p1"), record("p2"))
    for kind, state in ((b"pubsub", "waiting"), (b"normal", "reconnecting")):
        # the subscriptions (then the command connections, the admin's too) go away
        await nodes.admin.call(b"CLIENT", b"KILL", b"TYPE", kind)
        changed = replace(record("p1"), state=state)
        while True:
            try:
                await b.put_peer(changed)
                break
            except BusUnavailable:
                await asyncio.sleep(0.05)
        got = None
        deadline = time.monotonic() + WAIT
        while got != changed:
            assert time.monotonic() < deadline, f"stale record after a {kind!r} kill"
            try:
                got = (await a.get_pair("s1", "p1", "p2"))[0]
            except BusUnavailable:
                await asyncio.sleep(0.05)
        await nodes.admin.call(b"PING")
    # and the cache works again once the subscription is back
    await eventually(lambda: a._rooms._sub is not None)
    await a.get_pair("s1", "p1", "p2")
    before = await nodes.hmgets()
    await a.get_pair("s1", "p1", "p2")
    assert await nodes.hmgets() == before


async def test_without_client_commands_every_check_reads_redis(nodes: Nodes) -> None:
    """An ACL user that may not run CLIENT (e.g. a managed Redis): no caching, same answers."""
    admin = nodes.admin
    await admin.call(b"ACL", b"SETUSER", b"limited", b"on", b">s3cret", b"~*", b"&*", b"+@all")
    await admin.call(b"ACL", b"SETUSER", b"limited", b"-client")
    try:
        host = nodes.url.split("://", 1)[1]
        limited = RedisBus(RespClient(f"redis://limited:s3cret@{host}"), "node-l")
        nodes.buses.append(limited)
        await limited.start(lambda peer, seq, frame: None)
        b = await nodes.start("node-b")
        await b.put_peer(record("p1"))
        await b.put_peer(record("p2"))
        before = await nodes.hmgets()
        for n in range(3):
            await b.put_peer(record("p1", since=float(n)))
            assert await limited.get_pair("s1", "p1", "p2") == (
                record("p1", since=float(n)),
                record("p2"),
            )
        assert await nodes.hmgets() - before == 3
        assert limited._rooms._tracked is None  # never set up: CLIENT ID was refused
    finally:
        await admin.call(b"ACL", b"DELUSER", b"limited")


async def test_the_fast_lane_check_answers_only_from_a_tracked_cache(nodes: Nodes) -> None:
    """``get_pair_now`` (the read callback's relay check) is None unless the cache holds the
    pair and its tracking stands: then the awaited ``get_pair`` reads Redis."""
    a = await nodes.start("node-a")
    b = await nodes.start("node-b")
    await b.put_peer(record("p1"))
    await b.put_peer(record("p2"))
    assert a.get_pair_now("s1", "p1", "p2") is None  # never read here
    await a.get_pair("s1", "p1", "p2")
    assert a.get_pair_now("s1", "p1", "p2") == (record("p1"), record("p2"))
    assert a.get_pair_now("s1", "p1", "p3") is None  # another pair
    await b.put_peer(record("p1", "waiting"))  # another node changes the room
    await eventually(lambda: a.get_pair_now("s1", "p1", "p2") is None)
    assert (await a.get_pair("s1", "p1", "p2"))[0] == record("p1", "waiting")
    assert a.get_pair_now("s1", "p1", "p2") == (record("p1", "waiting"), record("p2"))
    await nodes.admin.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub")  # invalidations may be lost
    await eventually(lambda: a.get_pair_now("s1", "p1", "p2") is None)


async def test_checks_for_peers_not_in_the_room_are_not_kept(nodes: Nodes) -> None:
    """A client aiming relays at made-up peer ids is checked against Redis every time, and
    the node's cache does not grow with the ids it tried."""
    a = await nodes.start("node-a")
    await a.put_peer(record("p1"))
    await a.put_peer(record("p2"))
    await a.get_pair("s1", "p1", "p2")
    before = await nodes.hmgets()
    for n in range(50):
        assert await a.get_pair("s1", "p1", f"made-up-{n}") == (record("p1"), None)
        assert a.get_pair_now("s1", "p1", f"made-up-{n}") is None  # never served from the cache
    assert await nodes.hmgets() - before == 50
    cached = a._rooms._rooms[b"cc:sig:{room:s1}"]
    assert set(cached) == {"p1", "p2"}
