"""The bus's RESP client and subscriber against a real redis-server (on the asyncio loop, and
the main cases on uvloop too: the broker runs on it, and its transports are not
``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hiredis
import pytest
import pytest_asyncio
import uvloop

from signaling.bus.base import BusUnavailable
from signaling.bus.resp import RespClient
from signaling.bus.subscriber import Subscriber
from signaling.bus.wire import Address, Prepared, RespError, Script, parse_url, reply_error
from tests.support.servers import free_port

WAIT = 10.0


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[RespClient]:
    made = RespClient(redis_url)
    try:
        yield made
    finally:
        await made.close()


class OwnRedis:
    """A redis-server of the test's own, to stop, freeze and restart."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.args += ["--appendonly", "no", "--dir", str(workdir), "--enable-debug-command", "yes"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)

    async def up(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# pure helpers


def test_parse_url() -> None:
    assert parse_url("redis://127.0.0.1:6390/2") == Address("127.0.0.1", 6390, None, 2, None, None)
    assert parse_url("redis://u:p%40ss@host") == Address("host", 6379, None, 0, "u", "p@ss")
    assert parse_url("redis://:secret@host:1/") == Address("host", 1, None, 0, None, "secret")
    assert parse_url("unix:///tmp/r.sock?db=3") == Address(None, 0, "/tmp/r.sock", 3, None, None)
    with pytest.raises(ValueError):
        parse_url("http://host")


def test_error_replies_of_a_server_that_cannot_serve_are_unavailable() -> None:
    assert isinstance(
        reply_error(hiredis.ReplyError("LOADING loading the dataset")), BusUnavailable
    )
    assert isinstance(reply_error(hiredis.ReplyError("BUSY script running")), BusUnavailable)
    wrong = reply_error(hiredis.ReplyError("WRONGTYPE Operation against a key"))
    assert isinstance(wrong, RespError)
    assert str(wrong).startswith("WRONGTYPE")


# commands


async def test_concurrent_calls_pipeline_and_get_their_own_replies(client: RespClient) -> None:
    await _pipelined(client)


async def _pipelined(client: RespClient) -> None:
    await client.call(b"DEL", "counter")
    calls = []
    for n in range(500):
        calls.append(client.call(b"INCR", "counter"))
        calls.append(client.call(b"ECHO", f"echo {n}"))
        calls.append(client.call(b"HMGET", "missing", "a", "b"))
    replies = await asyncio.gather(*calls)
    assert replies[0::3] == list(range(1, 501))
    assert replies[1::3] == [f"echo {n}".encode() for n in range(500)]
    assert replies[2::3] == [[None, None]] * 500


async def test_an_error_reply_fails_only_its_own_call(client: RespClient) -> None:
    await client.call(b"SET", "text", "x")
    before = client.call(b"GET", "text")
    wrong = client.call(b"INCR", "text")
    after = client.call(b"ECHO", "after")
    assert await before == b"x"
    with pytest.raises(RespError, match="not an integer"):
        await wrong
    assert await after == b"after"
    with pytest.raises(RespError):
        await client.call(b"NOSUCHCOMMAND")


async def test_a_cancelled_call_does_not_shift_the_replies(client: RespClient) -> None:
    first = asyncio.ensure_future(client.call(b"ECHO", "first"))
    second = client.call(b"ECHO", "second")
    first.cancel()
    assert await second == b"second"
    assert await client.call(b"ECHO", "third") == b"third"


async def test_scripts_run_by_sha_and_are_loaded_when_missing(client: RespClient) -> None:
    script = Script.of("return {KEYS[1], ARGV[1]}")
    await client.call(b"SCRIPT", b"FLUSH")
    assert await client.evalsha(script, ["k"], ["v"]) == [b"k", b"v"]
    assert await client.call(b"SCRIPT", b"EXISTS", script.sha) == [1]
    assert await client.evalsha(script, ["k2"], [3]) == [b"k2", b"3"]
    with pytest.raises(RespError):
        await client.evalsha(Script.of("return redis.call('NOSUCH')"), [], [])


async def test_a_dead_server_is_unavailable_at_once() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0")
    try:
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await client.call(b"PING")
        with pytest.raises(BusUnavailable):  # backing off: no new attempt yet
            await client.call(b"PING")
        assert time.monotonic() - started < 1.0
    finally:
        await client.close()


async def test_calls_in_flight_fail_when_the_server_goes_and_work_after_it_returns(
    own_redis: OwnRedis,
) -> None:
    await own_redis.up()
    client = RespClient(own_redis.url)
    try:
        assert await client.call(b"PING") == b"PONG"
        in_flight = [client.call(b"DEBUG", b"SLEEP", 0.5)]
        in_flight += [client.call(b"ECHO", str(n)) for n in range(3)]
        await asyncio.sleep(0.1)
        own_redis.kill()
        for call in in_flight:
            with pytest.raises(BusUnavailable):
                await call
        with pytest.raises(BusUnavailable):
            await client.call(b"PING")
        own_redis.start()
        await own_redis.up()
        deadline = time.monotonic() + WAIT
        while True:  # reconnects on demand, after its backoff
            try:
                assert await client.call(b"PING") == b"PONG"
                break
            except BusUnavailable:
                assert time.monotonic() < deadline, "no reconnect"
                await asyncio.sleep(0.05)
    finally:
        await client.close()


async def test_a_frozen_server_is_unavailable_after_the_reply_timeout(own_redis: OwnRedis) -> None:
    await own_redis.up()
    client = RespClient(own_redis.url, reply_timeout=1.0)
    assert own_redis.proc is not None
    try:
        await client.call(b"PING")
        own_redis.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await client.call(b"PING")
        assert time.monotonic() - started < 3.0
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        await client.close()


async def test_a_closed_client_refuses_calls(client: RespClient) -> None:
    await client.call(b"PING")
    await client.close()
    with pytest.raises(BusUnavailable):
        await client.call(b"PING")


# subscriber


async def test_a_subscriber_hands_messages_on_in_order_and_holds_them(
    client: RespClient,
) -> None:
    await _subscribed(client)


async def _subscribed(client: RespClient) -> None:
    got: list[bytes] = []
    sub = Subscriber(client, "chan", got.append)
    try:
        await sub.subscribe()
        await client.call(b"PUBLISH", "chan", "early")
        await asyncio.sleep(0.05)
        assert got == []  # held until the owner's first resync is done
        with sub.hold():
            got.append(b"first resync")
        assert got == [b"first resync", b"early"]
        got.clear()
        await asyncio.gather(*(client.call(b"PUBLISH", "chan", f"m{n}") for n in range(300)))
        await _until(lambda: len(got) == 300)
        assert got == [f"m{n}".encode() for n in range(300)]  # handed on at once, in order
        with sub.hold():
            await client.call(b"PUBLISH", "chan", "held")
            await asyncio.sleep(0.05)
            assert got[-1] == b"m299"
            got.append(b"resynced")
        assert got[-2:] == [b"resynced", b"held"]
    finally:
        sub.close()


async def test_a_subscriber_says_when_a_reads_messages_are_handed_on(client: RespClient) -> None:
    """``after_messages`` follows each read's messages (the node flushes its sockets then):
    never before a message, at most once per message, and last."""
    events: list[bytes | None] = []
    sub = Subscriber(client, "chan", events.append, after_messages=lambda: events.append(None))
    try:
        await sub.subscribe()
        with sub.hold():
            pass
        await asyncio.gather(*(client.call(b"PUBLISH", "chan", f"m{n}") for n in range(300)))
        await _until(lambda: len([e for e in events if e is not None]) == 300)
        await _until(lambda: events[-1] is None)
        assert [e for e in events if e is not None] == [f"m{n}".encode() for n in range(300)]
        assert events[0] is not None
        assert all(not (a is None and b is None) for a, b in itertools.pairwise(events))
        assert 1 <= events.count(None) <= 300
    finally:
        sub.close()


async def test_a_failed_resync_hands_nothing_on(client: RespClient) -> None:
    got: list[bytes] = []
    sub = Subscriber(client, "chan", got.append)
    try:
        await sub.subscribe()
        with pytest.raises(BusUnavailable), sub.hold():
            await client.call(b"PUBLISH", "chan", "after a gap")
            await asyncio.sleep(0.05)
            raise BusUnavailable("the resync failed")
        await client.call(b"PUBLISH", "chan", "later")
        await asyncio.sleep(0.05)
        assert got == []  # the owner drops this subscription and resyncs on a new one
    finally:
        sub.close()


async def test_a_subscriber_watch_ends_when_the_connection_is_killed(client: RespClient) -> None:
    sub = Subscriber(client, "chan", lambda data: None)
    chores = 0

    async def chore() -> None:
        nonlocal chores
        chores += 1

    try:
        await sub.subscribe()
        watching = asyncio.ensure_future(sub.watch(0.05, chore))
        await _until(lambda: chores >= 2)
        assert await client.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub") == 1
        with pytest.raises(BusUnavailable):
            await asyncio.wait_for(watching, WAIT)
    finally:
        sub.close()


async def _until(check: object, timeout: float = WAIT) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_client_and_the_subscriber_on_uvloop(redis_server: str) -> None:
    async def scenario() -> None:
        client = RespClient(redis_server)
        try:
            await _pipelined(client)
            await _subscribed(client)
            with pytest.raises(RespError):
                await client.call(b"NOSUCHCOMMAND")
        finally:
            await client.close()
        dead = RespClient(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(BusUnavailable):
            await dead.call(b"PING")
        await dead.close()

    uvloop.run(scenario())


async def test_an_unawaited_script_goes_out_only_once_loaded_and_reports_failures(
    client: RespClient,
) -> None:
    """``evalsha_now``: written at once, its reply unawaited; an error goes to ``failed``."""
    setter = Script.of("redis.call('RPUSH', KEYS[1], ARGV[1]) return 1")
    failures: list[Exception] = []
    refs: list[str | None] = []

    def failed(ref: str | None, exc: Exception) -> None:
        refs.append(ref)
        failures.append(exc)

    await client.call(b"DEL", "k")
    await client.call(b"SCRIPT", b"FLUSH")
    assert not client.evalsha_now(setter, ["k"], ["early"], failed)  # not loaded yet
    await client.evalsha(setter, ["k"], [0])
    for n in range(1, 4):
        assert client.evalsha_now(setter, ["k"], [n], failed, f"ref{n}")
    assert await client.call(b"LRANGE", "k", 0, -1) == [b"0", b"1", b"2", b"3"]  # in order
    assert failures == []

    failing = Script.of("if ARGV[1] == 'fail' then return redis.call('NOSUCH') end return 1")
    assert await client.evalsha(failing, [], ["ok"]) == 1
    assert client.evalsha_now(failing, [], ["fail"], failed, "bad")
    await client.call(b"PING")
    assert len(failures) == 1 and isinstance(failures[0], RespError)

    await client.call(b"SCRIPT", b"FLUSH")  # the server forgets: the next one is refused...
    assert client.evalsha_now(setter, ["k"], [4], failed, "ref4")
    await client.call(b"PING")
    assert isinstance(failures[1], BusUnavailable)
    assert not client.evalsha_now(setter, ["k"], [5], failed)  # ...and not tried again
    await client.evalsha(setter, ["k"], [5])  # until an awaited call has loaded it
    assert client.evalsha_now(setter, ["k"], [6], failed, "ref6")
    assert await client.call(b"LRANGE", "k", 0, -1) == [b"0", b"1", b"2", b"3", b"5", b"6"]
    assert len(failures) == 2 and refs == ["bad", "ref4"]  # each failure with its sender's ref


@pytest.mark.parametrize(
    ("keys", "after", "arg"),
    [
        (["k"], [], b"x"),
        (["a:{p:1}:seq", "a:{p:1}:buf"], [256, 3_600_000, "cc:node:", "p-1"], b'{"type":"x"}'),
        ([], ["größe", 1.5, b"\r\n"], b""),
        (["k"], [7], "ünïcode\r\n".encode() * 300),
    ],
)
def test_a_prepared_command_is_the_command_packed_whole(
    keys: list[str], after: list[str | int | float | bytes], arg: bytes
) -> None:
    script = Script.of("return 1")
    prepared = Prepared.of(script, keys, after)
    whole = hiredis.pack_command((b"EVALSHA", script.sha, len(keys), *keys, arg, *after))
    assert prepared.command(arg) == whole
    reader = hiredis.Reader()
    reader.feed(prepared.command(arg))
    assert reader.gets()[3 + len(keys)] == arg  # a RESP array with the arg in its place


async def test_a_prepared_script_runs_unawaited_like_evalsha_now(client: RespClient) -> None:
    pusher = Script.of("redis.call('RPUSH', KEYS[1], ARGV[1] .. ARGV[2]) return 1")
    prepared = Prepared.of(pusher, ["pk"], ["!"])
    failures: list[tuple[str | None, Exception]] = []
    await client.call(b"DEL", "pk")
    await client.call(b"SCRIPT", b"FLUSH")
    assert not client.prepared_now(prepared, b"early", lambda r, e: failures.append((r, e)))
    await client.evalsha(pusher, ["pk"], ["a", "!"])  # loads it
    for n in range(3):
        assert client.prepared_now(prepared, b"%d" % n, lambda r, e: failures.append((r, e)))
    assert await client.call(b"LRANGE", "pk", 0, -1) == [b"a!", b"0!", b"1!", b"2!"]
    await client.call(b"SET", "pk", "not a list")
    assert client.prepared_now(prepared, b"3", lambda r, e: failures.append((r, e)), "ref3")
    await client.call(b"PING")
    assert [(ref, type(exc)) for ref, exc in failures] == [("ref3", RespError)]


async def test_unawaited_scripts_in_flight_fail_when_the_connection_goes(
    client: RespClient, redis_url: str
) -> None:
    script = Script.of("return 1")
    await client.evalsha(script, [], [])
    failures: list[Exception] = []
    admin = RespClient(redis_url)
    try:
        blocker = client.call(b"BLPOP", "never-filled", 0)  # holds the replies behind it
        assert all(
            client.evalsha_now(script, [], [], lambda ref, exc: failures.append(exc))
            for _ in range(3)
        )
        await asyncio.sleep(0.05)
        await admin.call(b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes")
        with pytest.raises(BusUnavailable):
            await blocker
        assert len(failures) == 3 and all(isinstance(f, BusUnavailable) for f in failures)
    finally:
        await admin.close()


async def test_unawaited_replies_are_read_in_bulk_and_an_awaited_call_reads_at_once(
    client: RespClient,
) -> None:
    """While only the fast lane's replies are owed, the connection reads them every
    READ_EVERY instead of waking up for each; a caller that awaits a reply ends the pause."""
    script = Script.of("return 1")
    await client.evalsha(script, [], [])
    conn = client.current()
    assert conn is not None
    reads = 0
    read = conn.data_received

    def counting(data: bytes) -> None:
        nonlocal reads
        reads += 1
        read(data)

    conn.data_received = counting  # type: ignore[method-assign]
    failures: list[Exception] = []
    sent = 0
    paused_seen = False
    for _ in range(100):
        assert client.evalsha_now(script, [], [], lambda ref, exc: failures.append(exc))
        sent += 1
        await asyncio.sleep(0.002)
        paused_seen = paused_seen or conn._paused is not None
    assert paused_seen
    assert reads < sent / 2, f"{reads} reads for {sent} replies"
    while conn._paused is None:  # wait for a pause, then ask something
        assert client.evalsha_now(script, [], [], lambda ref, exc: failures.append(exc))
        await asyncio.sleep(0.002)
    ping = client.call(b"PING")
    assert conn._paused is None  # reading again at once
    assert await ping == b"PONG"
    await _until(lambda: not conn._pending)
    assert failures == []
