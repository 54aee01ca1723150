"""Instructions per relayed candidate in each broker process, one node against two nodes on
Redis (each call's host on node A, its guest on node B, both sending), counted by valgrind's
callgrind the way ``bench.relay_instructions`` counts them: user space only, the same figure
on every run. The count of an idle window as long as the load's is subtracted from each
process, so the heartbeat, lease and liveness work of a node at rest is not billed to the
messages (at 200 msg/s under valgrind it would be a tenth of the count).

Each message is sent by one node and delivered by the other, so node A's and node B's counts
per message add up to what one message costs the nodes: the figure to bring down for
``bench.two_nodes`` (Redis's own work is not counted here; ``bench.two_nodes`` measures its
CPU).

    python -m bench.two_node_instructions [--rate 200 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import clients
from bench.common import (
    RESULTS,
    Server,
    running,
    start_broker,
    start_redis,
    table,
    write_results,
)
from bench.relay_instructions import (
    START_DEADLINE,
    callgrind,
    control,
    load_options,
    require_valgrind,
)

PAIRS = 20
IDLE = "idle"  # the description of the idle window's dump


def parts(out: Path) -> tuple[int, int]:
    """Instructions in the dumps callgrind wrote for ``out``: (load, idle window)."""
    load = idle = 0
    for part in out.parent.glob(out.name + "*"):
        desc, total = "", 0
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger"):
                desc = line
            elif line.startswith("totals:"):
                total = int(line.split()[1])
                break
        if IDLE in desc:
            idle += total
        else:
            load += total
    return load, idle


async def measure(
    http: Any, host: Server, guest: Server, counted: list[Server], args: argparse.Namespace
) -> int:
    """Book calls on ``host``, hosts there and guests on ``guest``; count the paced load, then
    an idle window as long; returns the messages delivered."""
    family = await clients.Family.register(http, host.url)
    pairs = await clients.broker_pairs(http, await family.calls(PAIRS), host.ws_url, guest.ws_url)
    load = clients.Load(pairs, "candidate")
    await load.paced(args.rate, 2.0, drain=30.0)  # warm up, not counted
    for s in counted:
        control(s, "-i", "on")
    started = time.monotonic()
    rx = await load.paced(args.rate, args.seconds, drain=60.0)
    span = time.monotonic() - started
    for s in counted:
        control(s, "-i", "off")
        control(s, "-d")
        control(s, "-z")
        control(s, "-i", "on")
    await asyncio.sleep(span)
    for s in counted:
        control(s, "-i", "off")
        control(s, f"--dump={IDLE}")
    await load.stop()
    await clients.close_pairs(pairs)
    return len(rx.got)


def counted_broker(name: str, out: Path, redis_url: str | None = None) -> Server:
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    prefix = callgrind(out)
    return start_broker(name, redis_url=redis_url, prefix=prefix, deadline=START_DEADLINE)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = RESULTS / "callgrind"
    folder.mkdir(parents=True, exist_ok=True)
    outs = {n: folder / f"{n}-two-node-candidate.out" for n in ("one-node", "node-a", "node-b")}
    results: dict[str, Any] = {}
    async with clients.session() as http:
        one = counted_broker("one-node-counted", outs["one-node"])
        try:
            results["one_node_delivered"] = await measure(http, one, one, [one], args)
        finally:
            one.stop(60.0)
        redis = start_redis()
        with running(redis):
            url = f"redis://127.0.0.1:{redis.port}/0"
            a = counted_broker("node-a-counted", outs["node-a"], url)
            b = counted_broker("node-b-counted", outs["node-b"], url)
            try:
                results["two_nodes_delivered"] = await measure(http, a, b, [a, b], args)
            finally:
                a.stop(60.0)
                b.stop(60.0)
    for name, out in outs.items():
        load, idle = parts(out)
        got = results["one_node_delivered" if name == "one-node" else "two_nodes_delivered"]
        results[name] = {"load": load, "idle": idle, "per_message": (load - idle) // got}
    nodes = results["node-a"]["per_message"] + results["node-b"]["per_message"]
    results["nodes_per_message"] = nodes
    results["nodes_vs_one"] = round(nodes / results["one-node"]["per_message"], 2)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    load_options(parser)
    args = parser.parse_args(argv)
    require_valgrind()
    r = asyncio.run(run(args))
    expected = round(args.rate * args.seconds)
    rows = [
        ["one node", f"{r['one_node_delivered']}/{expected}", r["one-node"]["per_message"], ""],
        ["node A", f"{r['two_nodes_delivered']}/{expected}", r["node-a"]["per_message"], ""],
        ["node B", "", r["node-b"]["per_message"], ""],
        ["A + B", "", r["nodes_per_message"], f"{r['nodes_vs_one']:.2f}x"],
    ]
    title = "instructions per relayed candidate, broker processes, user space (callgrind)"
    print(table(title, ["process", "delivered", "instructions", "vs one node"], rows))
    path = write_results("two_node_instructions", {"params": vars(args), **r})
    print(f"results: {path}")
    sys.exit(0 if r["one_node_delivered"] and r["two_nodes_delivered"] else 1)


if __name__ == "__main__":
    main()
