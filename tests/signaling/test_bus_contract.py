"""One contract for every ``Bus`` backend: in memory, and Redis on a real server.

``MemoryBus`` is one node by definition, so the cases about several nodes (a peer moving, a
release from another node, liveness of other nodes) and about Redis itself (lost connections,
restarts, lock leases) run on Redis only.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
import redis.asyncio as aredis
import redis.exceptions

from signaling import protocol
from signaling.bus.base import REPLAY_LIMIT, Bus, BusUnavailable, FastBus, PeerRecord
from signaling.bus.memory import MemoryBus
from signaling.bus.redis import RedisBus, RoomLockTimeout
from signaling.bus.resp import RespClient
from signaling.bus.scripts import TRIM_SLACK
from tests.support.servers import free_port

ONE_NODE = "MemoryBus is a single node by definition: this case needs two nodes (Redis only)"
REDIS_ONLY = "about Redis itself (Redis only)"
WAIT = 10.0


def chat(n: int, **extra: Any) -> bytes:
    return protocol.encode({"type": "chat", "from": "p_sender", "text": f"hello {n}", **extra})


@dataclass
class Backend:
    kind: str
    url: str | None
    opened: list[Bus] = field(default_factory=list)

    async def open(
        self,
        node_id: str = "node-a",
        peer_ttl: float | None = None,
        live_call_ttl: float | None = None,
    ) -> Bus:
        options = {} if peer_ttl is None else {"peer_ttl": peer_ttl}
        if live_call_ttl is not None:
            options["live_call_ttl"] = live_call_ttl
        bus: Bus
        if self.url is None:
            bus = MemoryBus(node_id, **options)
        else:
            bus = await RedisBus.connect(self.url, node_id, **options)
        self.opened.append(bus)
        return bus

    def needs_nodes(self) -> None:
        assert self.kind == "redis", ONE_NODE

    def needs_redis(self) -> str:
        assert self.url is not None, REDIS_ONLY
        return self.url


@pytest.fixture(params=["memory", "redis"])
def redis_or_none(request: pytest.FixtureRequest) -> str | None:
    """The Redis URL for the Redis run, None for the memory run."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest_asyncio.fixture
async def backend(redis_or_none: str | None) -> AsyncIterator[Backend]:
    made = Backend("memory" if redis_or_none is None else "redis", redis_or_none)
    try:
        yield made
    finally:
        for bus in reversed(made.opened):
            await bus.close()


class Inbox:
    """A ``deliver`` callback that records (peer, seq, frame)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, bytes]] = []

    def __call__(self, peer_id: str, seq: int, frame: bytes) -> None:
        self.got.append((peer_id, seq, frame))

    def seqs(self, peer_id: str = "p1") -> list[int]:
        return [seq for peer, seq, _ in self.got if peer == peer_id]

    async def wait(self, count: int, peer_id: str = "p1") -> None:
        await eventually(lambda: len(self.seqs(peer_id)) >= count)


async def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def started(backend: Backend, node_id: str = "node-a", **options: Any) -> tuple[Bus, Inbox]:
    bus = await backend.open(node_id, **options)
    inbox = Inbox()
    await bus.start(inbox)
    return bus, inbox


def seq_in(frame: bytes) -> int:
    seq: int = msgspec.json.decode(frame)["seq"]
    return seq


# frames


async def test_a_thousand_frames_arrive_in_order_with_their_seq(backend: Backend) -> None:
    bus, inbox = await started(backend)
    await bus.claim("p1")
    for n in range(1, 1001):
        assert await bus.send("p1", chat(n)) == n
    await inbox.wait(1000)
    assert inbox.seqs() == list(range(1, 1001))
    for n, (_, seq, frame) in enumerate(inbox.got, start=1):
        assert frame == protocol.stamp_seq(chat(n), n)
        assert msgspec.json.decode(frame) == {
            "seq": seq,
            "type": "chat",
            "from": "p_sender",
            "text": f"hello {n}",
        }


async def test_concurrent_sends_are_delivered_one_at_a_time_in_seq_order(backend: Backend) -> None:
    bus, inbox = await started(backend)
    await bus.claim("p1")
    seqs = await asyncio.gather(*(bus.send("p1", chat(n)) for n in range(200)))
    assert sorted(seqs) == list(range(1, 201))
    await inbox.wait(200)
    assert inbox.seqs() == list(range(1, 201))
    sent_as = {seq: n for n, seq in enumerate(seqs)}
    assert all(frame == protocol.stamp_seq(chat(sent_as[s]), s) for _, s, frame in inbox.got)


async def test_sends_written_at_once_keep_their_order_with_awaited_ones(backend: Backend) -> None:
    """``send_now`` (the fast lane's send, ``FastBus``) between awaited sends: one seq order."""
    bus, inbox = await started(backend)
    assert isinstance(bus, FastBus)
    await bus.claim("p1")
    failures: list[Exception] = []
    sent = 0
    for n in range(1, 301):
        if n % 10 == 1:
            await bus.send("p1", chat(n))
        else:
            assert bus.send_now("p1", chat(n), lambda ref, exc: failures.append(exc), None)
        sent += 1
    await inbox.wait(sent)
    assert inbox.seqs() == list(range(1, sent + 1))
    assert [frame for _, _, frame in inbox.got] == [
        protocol.stamp_seq(chat(n), n) for n in range(1, sent + 1)
    ]
    assert failures == []
    assert await bus.replay("p1", sent - 5) == [
        protocol.stamp_seq(chat(n), n) for n in range(sent - 4, sent + 1)
    ]


async def test_thousands_of_concurrent_sends_to_many_peers_all_succeed(backend: Backend) -> None:
    bus, inbox = await started(backend)
    peers = [f"p{n}" for n in range(100)]
    for peer in peers:
        await bus.claim(peer)
    sends = [bus.send(peer, chat(n)) for n in range(30) for peer in peers]  # no pool to run dry
    assert len(await asyncio.gather(*sends)) == 3000
    await eventually(lambda: len(inbox.got) == 3000)
    assert all(inbox.seqs(peer) == list(range(1, 31)) for peer in peers)


async def test_peers_have_their_own_seq(backend: Backend) -> None:
    bus, inbox = await started(backend)
    await bus.claim("p1")
    await bus.claim("p2")
    assert [await bus.send(p, chat(0)) for p in ("p1", "p2", "p1", "p3")] == [1, 1, 2, 1]
    await inbox.wait(2, "p1")
    await inbox.wait(1, "p2")
    assert (inbox.seqs("p1"), inbox.seqs("p2"), inbox.seqs("p3")) == ([1, 2], [1], [])


async def test_frames_sent_before_the_claim_are_replayable_not_delivered(backend: Backend) -> None:
    bus, inbox = await started(backend)
    for n in range(3):
        await bus.send("p1", chat(n))
    await bus.claim("p1")
    assert await bus.send("p1", chat(3)) == 4
    await inbox.wait(1)
    await asyncio.sleep(0.1)
    assert inbox.seqs() == [4]
    replayed = await bus.replay("p1", 0)
    assert replayed is not None
    assert [seq_in(f) for f in replayed] == [1, 2, 3, 4]
    assert replayed[0] == protocol.stamp_seq(chat(0), 1)


async def test_a_claim_before_start_delivers_after_start(backend: Backend) -> None:
    bus = await backend.open()
    await bus.claim("p1")
    await bus.send("p1", chat(1))
    inbox = Inbox()
    await bus.start(inbox)
    await bus.send("p1", chat(2))
    await eventually(lambda: 2 in inbox.seqs())
    # Redis delivers frame 1 too (the first subscription resyncs claimed peers); memory does not.
    assert inbox.seqs() in ([2], [1, 2])


async def test_release_stops_delivery_and_keeps_the_frames(backend: Backend) -> None:
    bus, inbox = await started(backend)
    await bus.claim("p1")
    await bus.send("p1", chat(1))
    await inbox.wait(1)
    await bus.release("p1")
    await bus.send("p1", chat(2))
    await asyncio.sleep(0.1)
    assert inbox.seqs() == [1]
    replayed = await bus.replay("p1", 1)
    assert replayed == [protocol.stamp_seq(chat(2), 2)]


async def test_replay_after_a_seq(backend: Backend) -> None:
    bus = await backend.open()
    for n in range(1, 6):
        await bus.send("p1", chat(n))
    after_two = await bus.replay("p1", 2)
    assert after_two == [protocol.stamp_seq(chat(n), n) for n in (3, 4, 5)]
    assert await bus.replay("p1", 5) == []
    assert len(await bus.replay("p1", 0) or []) == 5
    assert await bus.replay("p1", 6) is None  # a seq never handed out: the counter was reset
    assert await bus.replay("nobody", 0) == []


async def test_replay_is_none_once_frames_were_evicted(backend: Backend) -> None:
    bus = await backend.open()
    last = REPLAY_LIMIT + 10
    for n in range(1, last + 1):
        await bus.send("p1", chat(n))
    assert await bus.replay("p1", 0) is None
    assert await bus.replay("p1", 9) is None
    oldest = await bus.replay("p1", 10)
    assert oldest is not None
    assert [seq_in(f) for f in oldest] == list(range(11, last + 1))
    tail = await bus.replay("p1", last - 5)
    assert tail == [protocol.stamp_seq(chat(n), n) for n in range(last - 4, last + 1)]


async def test_forget_drops_buffer_counter_and_claim(backend: Backend) -> None:
    bus, inbox = await started(backend)
    await bus.claim("p1")
    await bus.send("p1", chat(1))
    await bus.send("p1", chat(2))
    await inbox.wait(2)
    await bus.forget("p1")
    assert await bus.replay("p1", 0) == []
    assert await bus.replay("p1", 2) is None
    assert await bus.send("p1", chat(3)) == 1
    await asyncio.sleep(0.1)
    assert inbox.seqs() == [1, 2]


async def test_frames_must_be_json_objects(backend: Backend) -> None:
    bus = await backend.open()
    for bad in (b"[1]", b"{}", b" {}", b""):
        with pytest.raises(ValueError):
            await bus.send("p1", bad)
    assert await bus.replay("p1", 0) == []


async def test_a_failing_deliver_does_not_stop_later_frames(backend: Backend) -> None:
    bus = await backend.open()
    got: list[int] = []

    def deliver(peer_id: str, seq: int, frame: bytes) -> None:
        if seq == 1:
            raise RuntimeError("receiver broke")
        got.append(seq)

    await bus.start(deliver)
    await bus.claim("p1")
    for n in range(3):
        await bus.send("p1", chat(n))
    await eventually(lambda: got == [2, 3])


async def test_unclaimed_peers_expire_and_claimed_ones_stay(backend: Backend) -> None:
    bus, inbox = await started(backend, peer_ttl=0.5)
    await bus.claim("kept")
    await bus.send("kept", chat(1))
    await bus.send("gone", chat(1))
    await asyncio.sleep(0.3)
    await bus.heartbeat(30)
    await asyncio.sleep(0.4)
    await bus.heartbeat(30)
    assert await bus.replay("gone", 0) == []
    assert await bus.send("gone", chat(2)) == 1
    assert await bus.send("kept", chat(2)) == 2
    await inbox.wait(2, "kept")


# several nodes


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_a_claim_moves_the_peer_to_another_node(backend: Backend) -> None:
    backend.needs_nodes()
    a, inbox_a = await started(backend, "node-a")
    b, inbox_b = await started(backend, "node-b")
    await a.claim("p1")
    await b.send("p1", chat(1))
    await inbox_a.wait(1)
    await b.claim("p1")
    await a.send("p1", chat(2))
    await b.send("p1", chat(3))
    await inbox_b.wait(2)
    await asyncio.sleep(0.1)
    assert inbox_a.seqs() == [1]
    assert inbox_b.seqs() == [2, 3]


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_a_release_by_another_node_does_not_steal(backend: Backend) -> None:
    backend.needs_nodes()
    a, inbox_a = await started(backend, "node-a")
    b, inbox_b = await started(backend, "node-b")
    await a.claim("p1")
    await b.release("p1")
    await b.send("p1", chat(1))
    await inbox_a.wait(1)
    await b.claim("p1")
    await a.release("p1")  # a late release from the node the peer left
    await a.send("p1", chat(2))
    await inbox_b.wait(1)
    assert (inbox_a.seqs(), inbox_b.seqs()) == ([1], [2])


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_live_nodes_drops_a_node_whose_heartbeat_expired(backend: Backend) -> None:
    backend.needs_nodes()
    a = await backend.open("node-a")
    b = await backend.open("node-b")
    await a.heartbeat(30)
    await b.heartbeat(0.3)
    assert await a.live_nodes() == {"node-a", "node-b"}
    assert await b.live_nodes() == {"node-a", "node-b"}
    await asyncio.sleep(0.5)
    assert await b.live_nodes() == {"node-a"}
    await b.heartbeat(30)
    assert await a.live_nodes() == {"node-a", "node-b"}


async def test_live_nodes_includes_this_node(backend: Backend) -> None:
    bus = await backend.open("node-a")
    await bus.heartbeat(30)
    assert "node-a" in await bus.live_nodes()
    assert bus.node_id == "node-a"


# rooms


def record(peer: str, since: float, session: str = "s1", **changes: Any) -> PeerRecord:
    fields: dict[str, Any] = {
        "peer_id": peer,
        "session_id": session,
        "subject": f"usr_{peer}",
        "role": "patient",
        "name": None,
        "node_id": "node-a",
        "state": "waiting",
        "since": since,
        **changes,
    }
    return PeerRecord(**fields)


async def test_room_peers_put_get_list_remove(backend: Backend) -> None:
    bus = await backend.open()
    records = [
        record("p_c", 1700000003.5),
        record("p_b", 1700000001.25, role="host", state="in_call", device="tv"),
        record("p_a", 1700000003.5, name="Guest"),
        record("p_x", 1700000000.0, session="s2"),
    ]
    for r in records:
        await bus.put_peer(r)
    assert [r.peer_id for r in await bus.room_peers("s1")] == ["p_b", "p_a", "p_c"]
    assert await bus.get_peer("s1", "p_b") == records[1]
    assert await bus.get_peer("s1", "p_a") == records[2]
    assert await bus.get_peer("s1", "p_x") is None
    assert await bus.get_peer("nope", "p_a") is None
    moved = record("p_c", 1700000000.5, state="in_call", node_id="node-b")
    await bus.put_peer(moved)
    assert await bus.get_peer("s1", "p_c") == moved
    assert [r.peer_id for r in await bus.room_peers("s1")] == ["p_c", "p_b", "p_a"]
    await bus.remove_peer("s1", "p_b")
    await bus.remove_peer("s1", "p_b")
    assert [r.peer_id for r in await bus.room_peers("s1")] == ["p_c", "p_a"]
    assert await bus.room_peers("s2") == [records[3]]
    assert await bus.room_peers("empty") == []


async def test_room_lock_excludes_across_tasks_and_nodes(backend: Backend) -> None:
    buses = [await backend.open("node-a")]
    if backend.kind == "redis":
        buses.append(await backend.open("node-b"))
    counter = {"n": 0}

    async def bump(bus: Bus) -> None:
        for _ in range(5):
            async with bus.room_lock("s1"):
                seen = counter["n"]
                await asyncio.sleep(0.001)
                counter["n"] = seen + 1

    await asyncio.gather(*(bump(buses[i % len(buses)]) for i in range(10)))
    assert counter["n"] == 50


async def test_room_lock_is_per_room_and_freed_by_an_error(backend: Backend) -> None:
    bus = await backend.open()
    with pytest.raises(RuntimeError):
        async with bus.room_lock("s1"):
            raise RuntimeError("boom")
    async with bus.room_lock("s1"):
        async with asyncio.timeout(2):
            async with bus.room_lock("s2"):
                pass
    async with asyncio.timeout(2), bus.room_lock("s1"):
        pass


async def test_memory_room_locks_are_dropped_when_unused() -> None:
    bus = MemoryBus("node-a")
    inside = asyncio.Event()

    async def hold() -> None:
        async with bus.room_lock("s1"):
            inside.set()
            await asyncio.sleep(0.01)

    await asyncio.gather(hold(), hold())
    assert inside.is_set()
    assert bus._room_locks == {}


# ringing


async def test_idle_peers_add_list_remove(backend: Backend) -> None:
    bus = await backend.open()
    await bus.add_idle("usr_1", "p_tv")
    await bus.add_idle("usr_1", "p_phone")
    await bus.add_idle("usr_1", "p_tv")
    await bus.add_idle("usr_2", "p_other")
    assert await bus.idle_peers("usr_1") == ["p_phone", "p_tv"]
    await bus.remove_idle("usr_1", "p_tv")
    await bus.remove_idle("usr_1", "p_unknown")
    assert await bus.idle_peers("usr_1") == ["p_phone"]
    await bus.remove_idle("usr_1", "p_phone")
    assert await bus.idle_peers("usr_1") == []
    assert await bus.idle_peers("usr_2") == ["p_other"]
    assert await bus.idle_peers("usr_3") == []


async def test_live_calls_add_list_remove_apart_from_idle_peers(backend: Backend) -> None:
    bus = await backend.open()
    await bus.add_live_call("usr_1", "ses_b")
    await bus.add_live_call("usr_1", "ses_a")
    await bus.add_live_call("usr_1", "ses_b")
    await bus.add_live_call("usr_2", "ses_b")
    await bus.add_idle("usr_1", "p_tv")
    assert await bus.live_calls("usr_1") == ["ses_a", "ses_b"]
    assert await bus.idle_peers("usr_1") == ["p_tv"]  # the two never mix
    await bus.remove_live_call("usr_1", "ses_b")
    await bus.remove_live_call("usr_1", "ses_unknown")
    await bus.remove_live_call("usr_3", "ses_b")
    assert await bus.live_calls("usr_1") == ["ses_a"]
    assert await bus.live_calls("usr_2") == ["ses_b"]
    await bus.remove_live_call("usr_1", "ses_a")
    assert await bus.live_calls("usr_1") == []
    assert await bus.live_calls("usr_3") == []
    assert await bus.idle_peers("usr_1") == ["p_tv"]


async def test_live_calls_expire_unless_added_again(backend: Backend) -> None:
    bus = await backend.open(live_call_ttl=0.5)
    await bus.add_live_call("usr_1", "ses_a")
    await bus.add_live_call("usr_1", "ses_b")
    await asyncio.sleep(0.3)
    await bus.add_live_call("usr_1", "ses_b")  # someone joined the call again
    await asyncio.sleep(0.35)
    await bus.heartbeat(30)
    assert await bus.live_calls("usr_1") == ["ses_b"]
    await asyncio.sleep(0.3)
    assert await bus.live_calls("usr_1") == []


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_live_calls_of_redis_are_hash_tagged_and_cannot_leak(backend: Backend) -> None:
    url = backend.needs_redis()
    bus = await backend.open(live_call_ttl=60)
    await bus.add_live_call("usr_1", "ses_a")
    admin = aredis.Redis.from_url(url)
    try:
        keys = await admin.keys("cc:sig:*live*")
        assert keys == [b"cc:sig:{live:usr_1}"]
        assert 55_000 < await admin.pttl(keys[0]) <= 60_000
        await bus.remove_live_call("usr_1", "ses_a")
        assert await admin.keys("cc:sig:*live*") == []
    finally:
        await admin.aclose()


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_redis_peer_keys_stay_bounded_and_always_expire(backend: Backend) -> None:
    """The buffer is trimmed in steps (at most TRIM_SLACK past the limit) and every peer key,
    claimed or not, new or old, has an expiry: nothing stays in Redis for ever."""
    url = backend.needs_redis()
    bus, inbox = await started(backend, peer_ttl=60)
    await bus.claim("claimed")
    admin = aredis.Redis.from_url(url)
    try:
        for peer in ("claimed", "unclaimed"):
            expected = 0
            for n in range(1, REPLAY_LIMIT * 2 + 1):
                await bus.send(peer, chat(n))
                expected += 1
                if expected > REPLAY_LIMIT + TRIM_SLACK:
                    expected = REPLAY_LIMIT
                if n in (
                    1,
                    REPLAY_LIMIT + TRIM_SLACK,
                    REPLAY_LIMIT + TRIM_SLACK + 1,
                    REPLAY_LIMIT * 2,
                ):
                    assert await admin.llen(f"cc:sig:{{p:{peer}}}:buf") == expected
            for key in (f"cc:sig:{{p:{peer}}}:seq", f"cc:sig:{{p:{peer}}}:buf"):
                assert 50_000 < await admin.pttl(key) <= 60_000, key
        replayed = await bus.replay("claimed", 0)
        assert replayed is None  # frames 1..256 are gone from what replay may return
        tail = await bus.replay("claimed", REPLAY_LIMIT)
        assert tail is not None and [seq_in(f) for f in tail] == list(
            range(REPLAY_LIMIT + 1, REPLAY_LIMIT * 2 + 1)
        )
        await inbox.wait(REPLAY_LIMIT * 2, "claimed")
    finally:
        await admin.aclose()


# Redis itself


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_room_lock_waits_boundedly_and_a_dead_holder_lease_ends(backend: Backend) -> None:
    url = backend.needs_redis()
    a = RedisBus(RespClient(url), "node-a", lock_wait=0.2, lock_lease=0.5)
    b = RedisBus(RespClient(url), "node-b", lock_wait=0.2)
    backend.opened += [a, b]
    holder = a.room_lock("s1")
    await holder.__aenter__()  # a node that dies inside the lock never leaves it
    with pytest.raises(RoomLockTimeout) as caught:
        async with b.room_lock("s1"):
            pass
    assert isinstance(caught.value, BusUnavailable)
    assert isinstance(caught.value, TimeoutError)
    await asyncio.sleep(0.5)
    async with b.room_lock("s1"):
        pass


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_a_dead_redis_is_unavailable(backend: Backend) -> None:
    backend.needs_redis()
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BusUnavailable):
        await RedisBus.connect(url)
    bus = RedisBus(RespClient(url), "node-a")
    backend.opened.append(bus)
    with pytest.raises(BusUnavailable):
        await bus.send("p1", chat(1))
    with pytest.raises(BusUnavailable):
        await bus.room_peers("s1")
    with pytest.raises(BusUnavailable):
        await bus.get_pair("s1", "p1", "p2")


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_frames_sent_while_the_subscription_is_down_arrive_once(backend: Backend) -> None:
    url = backend.needs_redis()
    bus, inbox = await started(backend)
    await bus.claim("p1")
    await bus.send("p1", chat(1))
    await inbox.wait(1)
    admin = aredis.Redis.from_url(url)
    try:
        await admin.client_kill_filter(_type="pubsub")
        for n in (2, 3):
            await bus.send("p1", chat(n))
    finally:
        await admin.aclose()
    await inbox.wait(3)
    await bus.send("p1", chat(4))
    await inbox.wait(4)
    await asyncio.sleep(0.1)
    assert inbox.seqs() == [1, 2, 3, 4]


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_claims_lost_by_a_flush_are_restored_and_the_seq_restarts(backend: Backend) -> None:
    url = backend.needs_redis()
    bus, inbox = await started(backend, peer_ttl=0.6)  # claims are checked every 0.2 s
    await bus.claim("p1")
    for n in (1, 2):
        await bus.send("p1", chat(n))
    await inbox.wait(2)
    admin = aredis.Redis.from_url(url)
    try:
        await admin.flushall()
    finally:
        await admin.aclose()
    assert await bus.send("p1", chat(3)) == 1  # nobody claims p1 now: kept, not published
    await inbox.wait(3)
    assert await bus.send("p1", chat(4)) == 2
    await inbox.wait(4)
    assert inbox.seqs() == [1, 2, 1, 2]
    assert [f for _, _, f in inbox.got[2:]] == [
        protocol.stamp_seq(chat(3), 1),
        protocol.stamp_seq(chat(4), 2),
    ]


def _redis_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(workdir)]
    log = (workdir / "redis.log").open("ab")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


async def _until_up(url: str) -> None:
    client = aredis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                await client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


@pytest.mark.parametrize("redis_or_none", ["redis"], indirect=True)
async def test_a_subscribed_bus_survives_a_redis_restart(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend.needs_redis()
    caplog.set_level(logging.WARNING, logger="signaling.bus.redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path)
    try:
        await _until_up(url)
        bus = await RedisBus.connect(url, "node-r")
        backend.opened.append(bus)
        inbox = Inbox()
        await bus.start(inbox)
        await bus.claim("p1")
        await bus.send("p1", chat(0))
        await inbox.wait(1)

        server.kill()
        server.wait()
        server = _redis_server(port, tmp_path)
        await _until_up(url)

        sent: list[bytes] = []
        deadline = time.monotonic() + WAIT
        while len(sent) < 5:
            assert time.monotonic() < deadline, "no send succeeded after the restart"
            frame = chat(len(sent) + 1)
            try:
                await bus.send("p1", frame)
            except BusUnavailable:
                await asyncio.sleep(0.05)
                continue
            sent.append(frame)
        await inbox.wait(1 + len(sent))
        after = inbox.got[1:]
        assert [seq for _, seq, _ in after] == [1, 2, 3, 4, 5]  # a reset: the keys were lost
        assert [f for _, _, f in after] == [
            protocol.stamp_seq(f, n + 1) for n, f in enumerate(sent)
        ]
        assert any("node-r" in r.getMessage() for r in caplog.records)
        assert not any("hello" in r.getMessage() for r in caplog.records)
    finally:
        server.kill()
        server.wait()
