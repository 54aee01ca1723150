"""Instructions per relayed message in each server's whole process, counted by valgrind's
callgrind: the bare relay, the lean relay and the broker relay the same paced load (each
message alone on its socket, as in ``bench.relay`` at 3,000 msg/s), with counting switched
on only while that load runs (``callgrind_control -i on/off``).

Timings move by 10% and more between runs on a shared VM; these counts are the same on every
run. They cover the process's own user-space code (Python, uvloop, aiohttp, msgspec, libc),
not the kernel's work for its system calls, which is about the same per message for all three
servers (one read, one write, a share of an ``epoll_wait``). So the two benchmarks together
tell what a message costs in code and what it costs in the kernel (docs/performance.md).

    python -m bench.relay_instructions [--kind candidate|sdp|both] [--rate 200 --seconds 10]

Under valgrind the servers run some 50x slower: the rate is kept low and start-up takes a
minute or two.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import clients
from bench.common import (
    RESULTS,
    Server,
    start_bare_relay,
    start_broker,
    table,
    write_results,
)

SERVERS = ("bare", "lean", "broker")
START_DEADLINE = 600.0  # seconds for a server to start under valgrind
PAIRS = 20


def load_options(parser: argparse.ArgumentParser) -> None:
    """The paced load under valgrind: its rate and length."""
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s (under valgrind)")
    parser.add_argument("--seconds", type=float, default=10.0)


def require_valgrind() -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def start(name: str, out: Path) -> Server:
    prefix = callgrind(out)
    if name == "broker":
        return start_broker("broker-counted", prefix=prefix, deadline=START_DEADLINE)
    module = "bench.bare_relay" if name == "bare" else "bench.lean_relay"
    return start_bare_relay(f"{name}-counted", module, prefix=prefix, deadline=START_DEADLINE)


def control(server: Server, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(server.pid)], check=True, capture_output=True)


def counted(out: Path) -> int:
    """Instructions in the dumps callgrind wrote for ``out`` (``totals:`` of each part)."""
    total = 0
    for part in out.parent.glob(out.name + "*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
                break
    return total


async def measure(name: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    out = RESULTS / "callgrind" / f"{name}-{kind}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    server = start(name, out)
    try:
        async with clients.session() as http:
            if name == "broker":
                family = await clients.Family.register(http, server.url)
                pairs = await clients.broker_pairs(http, await family.calls(PAIRS), server.ws_url)
            else:
                pairs = await clients.bare_pairs(http, server.ws_url, PAIRS, kind)
            load = clients.Load(pairs, kind)
            await load.paced(args.rate, 2.0, drain=30.0)  # warm up, not counted
            control(server, "-i", "on")
            rx = await load.paced(args.rate, args.seconds, drain=60.0)
            control(server, "-i", "off")
            control(server, "-d")
            await load.stop()
            await clients.close_pairs(pairs)
    finally:
        server.stop(60.0)
    delivered = len(rx.got)
    expected = round(args.rate * args.seconds)
    return {
        "delivered": delivered,
        "expected": expected,
        "instructions_per_message": round(counted(out) / delivered) if delivered else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = ["candidate", "sdp"] if args.kind == "both" else [args.kind]
    results: dict[str, Any] = {}
    for kind in kinds:
        row = {name: await measure(name, kind, args) for name in SERVERS}
        bare = row["bare"]["instructions_per_message"]
        for name in ("lean", "broker"):
            mine = row[name]["instructions_per_message"]
            row[name]["vs_bare"] = round(mine / bare, 2) if mine and bare else None
        results[kind] = row
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("candidate", "sdp", "both"), default="both")
    load_options(parser)
    args = parser.parse_args(argv)
    require_valgrind()
    results = asyncio.run(run(args))
    rows = []
    for kind, row in results.items():
        for name in SERVERS:
            r = row[name]
            ratio = f"{r['vs_bare']:.2f}x" if r.get("vs_bare") else ""
            rows.append(
                [
                    kind,
                    name,
                    f"{r['delivered']}/{r['expected']}",
                    r["instructions_per_message"],
                    ratio,
                ]
            )
    title = "instructions per relayed message, whole server process, user space (callgrind)"
    print(table(title, ["message", "server", "delivered", "instructions", "vs bare"], rows))
    path = write_results("relay_instructions", {"params": vars(args), "kinds": results})
    print(f"results: {path}")
    sys.exit(0 if all(r[n]["delivered"] for r in results.values() for n in SERVERS) else 1)


if __name__ == "__main__":
    main()
