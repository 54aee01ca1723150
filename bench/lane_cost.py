"""The fast lane's own Python, warm, per relayed message: what the broker does for one
``offer`` or ``candidate`` between a socket's read and its write, against what the bare and the
lean relay do for it (same frames, same machine, same run).

Unlike the other benchmarks this one imports the broker: the lane (``SignalingHandler``'s fast
lane), ``Rooms.relay_now``, the memory bus, the node's delivery and ``Connection.push`` + the
batch flush run in process, with a transport that only counts writes. No socket, no event loop
wake-up, warm caches: it prices the code, not the I/O (``bench.relay`` measures both, cold).
Baselines: the bare relay's per-message work (``json.loads``, a new dict with ``from``,
``json.dumps``, ``encode``) and the lean relay's (msgspec envelope decode, ``Outgoing`` encode).
Each step of the broker's path is also timed on its own.

    python -m bench.lane_cost [--seconds 1.0]
    python -m bench.lane_cost --instructions [--messages 2000]   # valgrind; a few minutes

With ``--instructions`` each path runs in a process of its own under valgrind's callgrind, which
counts the instructions executed: the same figure on every run whatever else the machine does
(timings here move by 10% and more from run to run), at the price of saying nothing about
caches. Per message = (count with N messages - count with none) / N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from bench import lean_relay
from bench.common import DATA, ROOT, env, table, write_results
from signaling import protocol
from signaling.bus.base import IN_CALL, PeerRecord
from signaling.bus.memory import MemoryBus
from signaling.connection import Connection
from signaling.handler import SignalingHandler
from signaling.node import Local, SignalingNode
from signaling.rooms import Rooms

CANDIDATE = {
    "candidate": "candidate:842163049 1 udp 1677729535 192.168.1.10 50000 typ srflx raddr 0.0.0.0"
    " rport 0 generation 0 ufrag abcd network-cost 999",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


class CountingTransport:
    """Takes writes and counts them (the socket's kernel work is not what this measures)."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class NoCompression:
    compress = False


def per_call_us(step: Callable[[], object], seconds: float) -> float:
    """Median of three timings of ``step``, in microseconds per call."""
    for _ in range(2000):
        step()
    number = max(1000, int(seconds / max(1e-7, timeit.timeit(step, number=1000) / 1000)) // 3)
    runs = sorted(timeit.timeit(step, number=number) / number for _ in range(3))
    return runs[1] * 1e6


async def paths() -> dict[str, dict[str, Any]]:
    """Per message kind: ``bare``, ``lean`` and ``broker``, each handling one message per call,
    the broker's steps alone (``steps``), and ``relayed()``: frames the receiver got so far."""
    bus = MemoryBus()
    node = SignalingNode(bus, Rooms(bus, None, None))  # type: ignore[arg-type]
    await node.start()
    handler = SignalingHandler(node, None, None, None)  # type: ignore[arg-type]
    conns: dict[str, Connection] = {}
    for peer in ("p_a", "p_b"):
        conn = Connection(NoCompression(), transport=CountingTransport(), batch=node.batch)  # type: ignore[arg-type]
        conn.bucket.rate = conn.bucket.burst = 1e12  # the rate limit runs, never refuses
        conns[peer] = conn
        node.local[peer] = Local(conn, session_id="s1")
        await bus.put_peer(PeerRecord(peer, "s1", f"u{peer}", "patient", None, "n", IN_CALL, 1.0))
        await bus.claim(peer)
    lane = handler._fast_lane(conns["p_a"], node.local["p_a"], "p_a")
    batch = node.batch
    receiver = conns["p_b"]
    sdp = (DATA / "offer.sdp").read_text()
    frames = {
        "sdp": {"type": "offer", "to": "p_b", "sdp": sdp},
        "candidate": {"type": "candidate", "to": "p_b", "candidate": CANDIDATE},
    }
    out: dict[str, dict[str, Any]] = {}
    for kind, message in frames.items():
        data = json.dumps(message, separators=(",", ":")).encode()

        def broker(data: bytes = data) -> None:
            batch.open = True
            lane(data)
            batch.open = False
            batch.flush()

        def bare(data: bytes = data) -> None:
            parsed = json.loads(data)
            forwarded = {"from": "p_a", **{k: v for k, v in parsed.items() if k != "to"}}
            json.dumps(forwarded).encode()

        def lean(data: bytes = data) -> None:
            env = lean_relay.decode(data)
            lean_relay.encode(lean_relay.Outgoing(env.type, "p_a", env.sdp, env.candidate))

        parsed = protocol.parse(data)
        assert isinstance(parsed, protocol.Offer | protocol.Candidate)
        stamped = protocol.stamp_seq(protocol.relayed(parsed, "p_a"), 7)

        def push(stamped: bytes = stamped) -> None:
            batch.open = True
            receiver.push(stamped)
            batch.open = False
            batch.flush()

        bucket = conns["p_a"].bucket
        out[kind] = {
            "bare": bare,
            "lean": lean,
            "broker": broker,
            "steps": {
                "protocol.parse_relayed": lambda data=data: protocol.parse_relayed(data),
                "rate limit": lambda bucket=bucket: bucket.allow(time.monotonic()),
                "room check (get_pair_now)": lambda: bus.get_pair_now("s1", "p_a", "p_b"),
                "protocol.relayed (encode)": lambda parsed=parsed: protocol.relayed(parsed, "p_a"),
                "push + flush": push,
            },
            "relayed": lambda: receiver._transport.writes,  # type: ignore[union-attr]
        }
    return out


async def measure(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, p in (await paths()).items():
        before = p["relayed"]()
        row = {
            "bare_us": per_call_us(p["bare"], seconds),
            "lean_us": per_call_us(p["lean"], seconds),
            "broker_us": per_call_us(p["broker"], seconds),
            "broker_steps_us": {
                name: round(per_call_us(f, seconds / 4), 3) for name, f in p["steps"].items()
            },
        }
        assert p["relayed"]() > before, "the lane relayed nothing"
        row["broker_vs_bare"] = round(row["broker_us"] / row["bare_us"], 2)
        row["broker_vs_lean"] = round(row["broker_us"] / row["lean_us"], 2)
        out[kind] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    return out


# Instructions (callgrind): the same paths, counted instead of timed


async def run_path(path: str, kind: str, messages: int) -> None:
    """Handle ``messages`` messages on one path (``--run``, under callgrind)."""
    p = (await paths())[kind]
    before = p["relayed"]()
    step = p[path]
    for _ in range(messages):
        step()
    assert path != "broker" or p["relayed"]() - before == messages, "the lane relayed nothing"


def callgrind_total(args: list[str]) -> int:
    """Instructions callgrind counted in ``python -m bench.lane_cost --run ARGS``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.lane_cost", "--run", *args]
    same = {**env(), "PYTHONHASHSEED": "0"}  # the same dict layouts in every process
    done = subprocess.run(command, cwd=ROOT, env=same, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no total")
    return int(found.group(1))


def instructions(messages: int) -> dict[str, Any]:
    """Instructions per message of each path: (run with N messages - run with none) / N."""
    start_up = callgrind_total(["broker", "candidate", "0"])  # set-up is the same for all
    out: dict[str, Any] = {}
    for kind in ("sdp", "candidate"):
        row = {}
        for path in ("bare", "lean", "broker"):
            total = callgrind_total([path, kind, str(messages)])
            row[path] = round((total - start_up) / messages)
        row["broker_vs_bare"] = round(row["broker"] / row["bare"], 2)
        row["broker_vs_lean"] = round(row["broker"] / row["lean"], 2)
        out[kind] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per timing")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per message under valgrind's callgrind instead of timing",
    )
    parser.add_argument("--messages", type=int, default=2000, help="per count (--instructions)")
    parser.add_argument("--run", nargs=3, metavar=("PATH", "KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        path, kind, n = args.run
        asyncio.run(run_path(path, kind, int(n)))
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
        counted = instructions(args.messages)
        rows = [
            [kind, r["bare"], r["lean"], r["broker"], f"{r['broker_vs_bare']:.2f}x"]
            for kind, r in counted.items()
        ]
        title = "instructions per relayed message, the fast lane's Python (callgrind)"
        print(table(title, ["message", "bare", "lean", "broker", "broker/bare"], rows))
        path = write_results("lane_instructions", {"params": vars(args), "kinds": counted})
        print(f"results: {path}")
        return
    results = asyncio.run(measure(args.seconds))
    rows = []
    for kind, r in results.items():
        rows.append([kind, "bare", f"{r['bare_us']:.2f}", ""])
        rows.append([kind, "lean", f"{r['lean_us']:.2f}", ""])
        rows.append([kind, "broker", f"{r['broker_us']:.2f}", f"{r['broker_vs_bare']:.2f}x bare"])
        for name, us in r["broker_steps_us"].items():
            rows.append(["", f"  {name}", f"{us:.2f}", ""])
    title = "the fast lane's Python per relayed message, warm (no sockets)"
    print(table(title, ["message", "path", "us/msg", ""], rows))
    path = write_results("lane_cost", {"params": vars(args), "kinds": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
