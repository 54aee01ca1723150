"""Where the broker's relay time goes: the relay load of ``bench.relay`` against one broker,
sampled with py-spy (``pip install py-spy``; found on PATH or at ``$PY_SPY``) or, without it,
with cProfile inside the broker process (``python -m cProfile -m broker serve``).

Prints the functions with the most samples of their own ("self") and the share of samples that
passed through each step of the relay path ("total"). Raw output goes to bench/results/.

    python -m bench.profile_relay [--kind sdp|candidate] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import clients
from bench.common import (
    RESULTS,
    Server,
    free_port,
    run_loop,
    spawn,
    start_broker,
    start_redis,
)

# Where a sample's time goes: the first category matching a frame, walking from the innermost
# frame outwards (so a socket write inside the writer task counts as "socket write").
CATEGORIES = {
    "SDP syntax check (check_sdp: one regex per line)": ("check_sdp (",),
    "candidate syntax check": ("check_candidate (",),
    "protocol.parse: str->bytes, msgspec decode + validation": ("parse (signaling/protocol",),
    "socket write syscall (transport.write)": ("Transport.write (", "UVStream.write"),
    "redis-py client (commands, pool, replies, pubsub)": ("(redis/",),
    "RESP client + subscriber (signaling/bus/resp*.py, wire.py, subscriber.py)": (
        "(signaling/bus/resp",
        "(signaling/bus/wire.py",
        "(signaling/bus/subscriber.py",
    ),
    "RedisBus (scripts, peer records, channel reader)": ("(signaling/bus/redis.py",),
    "socket write (aiohttp send_str/send_frame -> transport.write)": (
        "send_str (aiohttp",
        "send_frame (aiohttp",
    ),
    "writer task (queue get, bytes->str, closing_code)": (
        "Connection._write",
        "closing_code",
        "Queue.get",
    ),
    "socket write (Connection._flush: one write per socket and read)": (
        "Connection._flush",
        "Batch.flush",
    ),
    "bus.send: seq, replay buffer, deliver, push": (
        "MemoryBus.send",
        "_deliver (signaling/node",
        "Connection.push",
        "stamp_seq",
        "_call (signaling/bus",
        "Lock.",
    ),
    "rooms.relay: peer lookups, relayed(), msgspec encode": (
        "Rooms.relay",
        "get_peer (",
        "relayed (",
        "encode (signaling",
    ),
    "socket read + frame parsing (aiohttp data_received)": (
        "data_received",
        "_read_ready",
        "_Chunked.feed_data",
    ),
    "fast lane (Intake.feed_data, lane, rate limit)": ("Intake.feed_data", "lane (signaling"),
    "handler loop (ws.receive, dispatch, rate limit)": (
        "SignalingHandler._read",
        "SignalingHandler._take",
        "SignalingHandler._dispatch",
        "WebSocketResponse.receive",
        "WebSocketResponse.__anext__",
        "TokenBucket",
        "_flush_heartbeat_reset",
    ),
    "epoll wait (selector)": ("EpollSelector.select",),
    "event loop (callbacks, futures, task steps)": (
        "Handle._run",
        "_run_once",
        "create_future",
        "call_soon",
        "Task.",
    ),
    # uvloop's loop is C: py-spy shows its time (epoll, callbacks, socket I/O) as run_app.
    "event loop in C (uvloop: epoll, callbacks; shown as run_app)": ("run_app (aiohttp/web.py",),
}
OTHER = "other (timers, heartbeats, threads)"
UNITS = {"sdp": "messages", "candidate": "messages", "hello": "idle sockets", "join": "joins"}
# For --kind hello / join the handshake steps matter more (same innermost-first rule).
HANDSHAKE = {
    "JWT verify (PyJWT + Ed25519)": ("Tokens.verify", "verify_access"),
    "JWT sign (resume token)": ("Tokens.issue", "KeyRing.sign"),
    "SQLite thread (queries)": ("_in_tx (", "_worker (concurrent"),
    "executor hop (run_in_executor, futures)": ("run_in_executor", "ThreadPoolExecutor.submit"),
    "logging": ("(logging/",),
    "rooms.join (lock, records, events)": ("Rooms.join", "Joining.record", "Ringing.ring"),
    "HTTP upgrade + middlewares": (
        "WebSocketResponse.prepare",
        "WebSocketResponse.__init__",
        "(broker/api/middleware.py",
    ),
    "TURN credentials (ice_servers)": ("ice_servers",),
}
# Inclusive shares: samples with one of these functions anywhere on the stack.
THROUGH = (
    "SignalingHandler._read (",
    "parse (signaling/protocol.py",
    "check_sdp (",
    "Rooms.relay (",
    "Rooms.relay_now (",
    "MemoryBus.send (",
    "MemoryBus.send_now (",
    "RedisBus.send (",
    "RedisBus.get_peer (",
    "RedisBus._read (",
    "RedisBus._on_message (",
    "RespClient.evalsha (",
    "Connection._write (",
)


def find_py_spy() -> str | None:
    given = os.environ.get("PY_SPY")
    if given and Path(given).exists():
        return given
    return shutil.which("py-spy") or next(
        (str(p) for p in (Path("/tmp/pyspy/bin/py-spy"),) if p.exists()), None
    )


async def drive(
    servers: tuple[Server, Server], args: argparse.Namespace, hooks: tuple[Any, Any]
) -> int:
    """The load for about ``seconds``, between ``hooks`` (start, stop), after the setup:

    * ``sdp``/``candidate``: the relay benchmark's load, paced then a burst, repeatedly (hosts
      on ``servers[0]``, guests on ``servers[1]``); returns messages relayed;
    * ``hello``: idle sockets (access token) opened 16 at a time; returns sockets;
    * ``join``: ``--rate`` sockets/s join calls (join tokens fetched first); returns joins.
    """
    host, guest = servers
    async with clients.session() as http:
        family = await clients.Family.register(http, host.url)
        if args.kind == "hello":
            return await _hellos(http, host, family.host.token, args, hooks)
        if args.kind == "join":
            calls = await family.calls(int(args.rate * args.seconds / 2) + 1)
            tokens = [t for c in calls for t in (c.host_token, c.guest_token)]
            return await _joins(http, host, tokens, args, hooks)
        calls = await family.calls(args.pairs)
        pairs = await clients.broker_pairs(http, calls, host.ws_url, guest.ws_url)
        load = clients.Load(pairs, args.kind)
        await asyncio.sleep(0.5)
        hooks[0]()
        delivered = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            delivered += len((await load.paced(args.rate, 1.5)).got)
            if args.burst:
                delivered += len((await load.burst(args.burst)).got)
        hooks[1]()
        await load.stop()
        await clients.close_pairs(load.pairs)
        return delivered


async def _hellos(
    http: Any, server: Server, token: str, args: argparse.Namespace, hooks: tuple[Any, Any]
) -> int:
    socks: list[clients.Sock] = []
    sem = asyncio.Semaphore(16)
    end = time.monotonic() + args.seconds

    async def one() -> None:
        async with sem:
            if time.monotonic() < end:
                socks.append(await clients.broker_socket(http, server.ws_url, token, join=False))

    hooks[0]()
    while time.monotonic() < end:
        await asyncio.gather(*(one() for _ in range(256)))
    hooks[1]()
    await asyncio.gather(*(s.ws.close() for s in socks), return_exceptions=True)
    return len(socks)


async def _joins(
    http: Any, server: Server, tokens: list[str], args: argparse.Namespace, hooks: tuple[Any, Any]
) -> int:
    socks: list[clients.Sock] = []

    async def one(token: str) -> None:
        socks.append(await clients.broker_socket(http, server.ws_url, token))

    hooks[0]()
    tasks = []
    start = time.monotonic()
    for i, token in enumerate(tokens):
        await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(token)))
    await asyncio.gather(*tasks, return_exceptions=True)
    hooks[1]()
    await asyncio.gather(*(s.ws.close() for s in socks), return_exceptions=True)
    return len(socks)


def summarize_collapsed(path: Path) -> dict[str, Any]:
    """py-spy ``--format raw``: one ``frame;frame;... count`` line per distinct stack."""
    own: Counter[str] = Counter()
    where: Counter[str] = Counter()
    through: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_text)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        where[_category(frames)] += n
        for name in THROUGH:
            if any(name in f for f in frames):
                through[name] += n
    return {
        "samples": total,
        "through_pct": [(f, round(100 * through[f] / total, 1)) for f in THROUGH if through[f]],
        "categories_pct": [(c, round(100 * n / total, 1)) for c, n in where.most_common()],
        "self_top": [(f, round(100 * n / total, 1)) for f, n in own.most_common(25)],
    }


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for category, needles in {**HANDSHAKE, **CATEGORIES}.items():
            if any(needle in frame for needle in needles):
                return category
    return OTHER


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py:123)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/site-packages/', 1)[-1]}"


def summarize_pstats(path: Path) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    rows = []
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (file, line, func), (_, calls, tottime, cumtime, _) in entries.items():
        rows.append((f"{func} ({Path(file).name}:{line})", calls, tottime, cumtime))
    total = sum(r[2] for r in rows) or 1.0
    top_self = sorted(rows, key=lambda r: -r[2])[:25]
    top_cum = sorted(rows, key=lambda r: -r[3])[:40]
    return {
        "total_s": round(total, 3),
        "self_top": [(r[0], r[1], round(100 * r[2] / total, 1)) for r in top_self],
        "cumulative_top": [(r[0], r[1], round(100 * r[3] / total, 1)) for r in top_cum],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("sdp", "candidate", "hello", "join"), default="sdp")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument(
        "--rate", type=float, default=None, help="messages/s (default 3000), joins/s (100)"
    )
    parser.add_argument("--burst", type=int, default=60, help="0: paced only")
    parser.add_argument(
        "--two-nodes", action="store_true", help="two nodes on Redis; node A is sampled"
    )
    parser.add_argument("--cprofile", action="store_true", help="even when py-spy is there")
    parser.add_argument("--variant", default="", help="what-if patches (bench/broker_variant.py)")
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = 100.0 if args.kind == "join" else 3000.0
    RESULTS.mkdir(parents=True, exist_ok=True)
    py_spy = None if args.cprofile else find_py_spy()
    if py_spy:
        label = f"{args.kind}{'-two-nodes' if args.two_nodes else ''}"
        label += f"-{args.variant.replace(',', '+')}" if args.variant else ""
        out = RESULTS / f"profile-{label}.collapsed.txt"
        started: list[Server] = []
        spies: list[subprocess.Popen[bytes]] = []
        try:
            if args.two_nodes:
                redis = start_redis()
                started.append(redis)
                url = f"redis://127.0.0.1:{redis.port}/0"
                variant = args.variant or None
                started += [
                    start_broker("node-a", url, variant=variant),
                    start_broker("node-b", url, variant=variant),
                ]
                servers = (started[1], started[2])
            else:
                started.append(start_broker("profiled", variant=args.variant or None))
                servers = (started[0], started[0])

            def start() -> None:
                cmd = [py_spy, "record", "--pid", str(servers[0].pid), "--rate", "500"]
                cmd += ["--format", "raw", "--output", str(out), "--nonblocking", "--threads"]
                spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
                time.sleep(0.5)

            def stop() -> None:
                while spies:
                    spy = spies.pop()
                    spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
                    spy.wait(30)

            try:
                delivered = run_loop(drive(servers, args, (start, stop)))
            finally:
                stop()
        finally:
            for server in reversed(started):
                server.stop()
        summary = summarize_collapsed(out)
        print(
            f"py-spy, {summary['samples']} samples; load: {delivered} {UNITS[args.kind]} ({label})"
        )
        print("where the on-CPU samples are (innermost matching step):")
        for category, pct in summary["categories_pct"]:
            print(f"  {pct:5.1f}%  {category}")
        print("samples with this function on the stack:")
        for name, pct in summary["through_pct"]:
            print(f"  {pct:5.1f}%  {name.rstrip(' (')}")
    else:
        port = free_port()
        data = RESULTS / "data" / f"profiled-{port}"
        data.mkdir(parents=True, exist_ok=True)
        prof = RESULTS / f"profile-{args.kind}.pstats"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "broker", "serve"]
        cmd += ["--port", str(port), "--data-dir", str(data), "--join-before-minutes", "1440"]
        broker = spawn("profiled", cmd, port)
        broker.scratch = data
        try:
            hooks = (lambda: None, lambda: None)  # cProfile sees the setup too
            delivered = run_loop(drive((broker, broker), args, hooks))
        finally:
            broker.stop()
        summary = summarize_pstats(prof)
        print(f"cProfile; load: {delivered} {UNITS[args.kind]} ({args.kind}); cumulative top:")
        for name, calls, pct in summary["cumulative_top"]:
            print(f"  {pct:5.1f}%  {calls:>9}  {name}")
    print("most samples of their own:")
    for row in summary["self_top"]:
        print(f"  {row[-1]:5.1f}%  {row[0]}")


if __name__ == "__main__":
    main()
