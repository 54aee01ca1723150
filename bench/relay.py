"""Relay cost: messages through (a) the bare relay, (b) the lean relay (a floor) and (c) one
broker node, side by side.

For each message size (the ~4 KB aiortc SDP offer in ``bench/data/offer.sdp``, a ~200 B ICE
candidate), ``--pairs`` pairs of sockets on each server send to each other, both directions:

* *paced*: ``--rate`` messages/s for ``--seconds`` (open loop, spread over all sockets, each
  under the broker's 50 msg/s per-socket limit): server CPU per relayed message at a moderate
  load, and one-way latency p50/p99;
* *burst*: every socket writes ``--burst`` messages at once (within the broker's per-socket
  burst allowance of 200): throughput, and CPU per message when the server is saturated.

The servers take turns, ``--rounds`` times (the machine is shared, so each figure is the
median of the rounds). Server CPU is the server process's own on-CPU time, all its threads
(``/proc/<pid>/task/*/schedstat``, in ns; the 10 ms ticks of ``/proc/<pid>/stat`` if a thread
ended meanwhile), over the phase, divided by the messages delivered. The broker is
``python -m broker serve`` with every default: validation, rate limits, seq + replay buffer,
bounded send queues, INFO logging. Each phase also records the share of the server's CPU
spent in user space (the rest is the kernel: syscalls, wake-ups, loopback TCP).

    python -m bench.relay [--pairs 100 --rate 3000 --seconds 4 --burst 100 --rounds 5] [--no-lean]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench import clients
from bench.common import (
    Busy,
    Server,
    latency_summary,
    quiet,
    ratio,
    run_loop,
    running,
    start_bare_relay,
    start_broker,
    table,
    verdict,
    write_results,
)

TARGET_RATIO = 0.75  # broker CPU per message at most 0.75x the bare relay's
BARE_WIRE = ("bare", "lean")  # servers that speak the bare relay's wire (no auth, no rooms)


async def paced(server: Server, load: clients.Load, rate: float, seconds: float) -> dict[str, Any]:
    busy = Busy([server])
    rx = await load.paced(rate, seconds)
    used = busy.done()
    cpu, wall, got = used["cpu_s"][server.name], used["wall_s"], len(rx.got)
    return {
        "sent": load.sent,
        "sockets_closed": list(load.closed),
        "delivered": got,
        "errors": len(rx.errors),
        "first_error": rx.errors[0] if rx.errors else None,
        "payload_check": clients.check_sample(rx, load.kind, server.name in BARE_WIRE) or "ok",
        "server_cpu_s": cpu,
        "server_user_share": used["user_share"][server.name],
        "cpu_us_per_msg": round(cpu / got * 1e6, 1) if got else None,
        "server_cpu_util": round(cpu / wall, 3),
        "client_cpu_util": round(used["client_cpu_s"] / wall, 3),
        "other_cpus": used["other_cpus"],
        "steal_ms": used["steal_ms"],
        "latency": latency_summary(load.latencies_ns()),
    }


async def burst(server: Server, load: clients.Load, per_socket: int) -> dict[str, Any]:
    busy = Busy([server])
    rx = await load.burst(per_socket)
    used = busy.done()
    cpu, got, span = used["cpu_s"][server.name], len(rx.got), load.span_s()
    return {
        "sent": load.sent,
        "sockets_closed": list(load.closed),
        "delivered": got,
        "errors": len(rx.errors),
        "first_error": rx.errors[0] if rx.errors else None,
        "span_s": round(span, 3),
        "msgs_per_s": round(got / span) if got else 0,
        "server_cpu_s": cpu,
        "cpu_us_per_msg": round(cpu / got * 1e6, 1) if got else None,
        "server_cpu_util": round(cpu / span, 3) if got else None,
        "client_cpu_util": round(used["client_cpu_s"] / span, 3) if got else None,
        "other_cpus": used["other_cpus"],
        "steal_ms": used["steal_ms"],
    }


def median_of(rounds: list[dict[str, Any]], *path: str) -> float:
    values = []
    for r in rounds:
        v: Any = r
        for key in path:
            v = v[key]
        if v is not None:
            values.append(v)
    return round(statistics.median(values), 3) if values else float("nan")


async def one_size(
    http: Any, kind: str, servers: dict[str, Server], calls: list[clients.Call], args: Any
) -> dict[str, Any]:
    """``calls``: ``args.pairs`` calls for each broker-like server, in ``servers`` order."""
    loads = {
        name: clients.Load(
            await clients.bare_pairs(http, servers[name].ws_url, args.pairs, kind), kind
        )
        for name in servers
        if name in BARE_WIRE
    }
    for i, name in enumerate(n for n in servers if n not in BARE_WIRE):
        mine = calls[i * args.pairs : (i + 1) * args.pairs]
        pairs = await clients.broker_pairs(http, mine, servers[name].ws_url)
        loads[name] = clients.Load(pairs, kind)
    await asyncio.sleep(0.5)  # the joins' own traffic settles
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        await quiet()
        for name in servers:
            rounds[name].append(
                {"paced": await paced(servers[name], loads[name], args.rate, args.seconds)}
            )
        for name in servers:
            rounds[name][-1]["burst"] = await burst(servers[name], loads[name], args.burst)
        await asyncio.sleep(args.refill)  # the broker's per-socket token buckets fill up again
    for load in loads.values():
        await load.stop()
        await clients.close_pairs(load.pairs)
    sample = clients.Template.of(kind, "peer-0123456789abcdef").frame(123456)
    row: dict[str, Any] = {"client_frame_bytes": len(sample.encode()), "rounds": rounds}
    for name in servers:
        rs = rounds[name]
        row[name] = {
            "paced_cpu_us_per_msg": median_of(rs, "paced", "cpu_us_per_msg"),
            "paced_p50_ms": median_of(rs, "paced", "latency", "p50_ms"),
            "paced_p99_ms": median_of(rs, "paced", "latency", "p99_ms"),
            "paced_delivered": sum(r["paced"]["delivered"] for r in rs),
            "paced_sent": sum(r["paced"]["sent"] for r in rs),
            "burst_cpu_us_per_msg": median_of(rs, "burst", "cpu_us_per_msg"),
            "burst_msgs_per_s": median_of(rs, "burst", "msgs_per_s"),
            "burst_server_cpu_util": median_of(rs, "burst", "server_cpu_util"),
            "burst_delivered": sum(r["burst"]["delivered"] for r in rs),
            "burst_sent": sum(r["burst"]["sent"] for r in rs),
            "errors": sum(r[m]["errors"] for r in rs for m in ("paced", "burst")),
            "other_cpus_max": max(r[m]["other_cpus"] for r in rs for m in ("paced", "burst")),
            "payload_check": rs[0]["paced"]["payload_check"],
            "user_share": median_of(rs, "paced", "server_user_share"),
        }
    b = row["bare"]
    row["ratios"] = {}
    for name in servers:
        if name == "bare":
            continue
        k = row[name]
        r = row["ratios"][name] = {
            "paced_cpu": ratio(k["paced_cpu_us_per_msg"], b["paced_cpu_us_per_msg"]),
            "burst_cpu": ratio(k["burst_cpu_us_per_msg"], b["burst_cpu_us_per_msg"]),
            "burst_throughput": ratio(k["burst_msgs_per_s"], b["burst_msgs_per_s"]),
        }
        if name not in BARE_WIRE:
            r["target_met"] = max(r["paced_cpu"], r["burst_cpu"]) <= TARGET_RATIO
    return row


async def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = {"bare": start_bare_relay("bare")}
    if args.lean:
        servers["lean"] = start_bare_relay("lean", "bench.lean_relay")
    servers["broker"] = start_broker("broker")
    if args.variant:
        name = f"broker+{args.variant}"
        servers[name] = start_broker("variant", variant=args.variant)
    results: dict[str, Any] = {"params": vars(args), "sizes": {}}
    brokers = [s for n, s in servers.items() if n not in BARE_WIRE]
    with running(*servers.values()):
        async with clients.session() as http:
            families = [await clients.Family.register(http, s.url) for s in brokers]
            for kind in args.sizes:
                calls = []
                for family in families:
                    calls += await family.calls(args.pairs)
                results["sizes"][kind] = await one_size(http, kind, servers, calls, args)
    return results


def report(results: dict[str, Any]) -> str:
    rows: list[tuple[Any, ...]] = []
    for kind, row in results["sizes"].items():
        names = [n for n in row["rounds"]]
        for name in names:
            r = row[name]
            rows.append(
                (
                    f"{kind} ({row['client_frame_bytes']} B)",
                    name,
                    r["paced_cpu_us_per_msg"],
                    r["paced_p50_ms"],
                    r["paced_p99_ms"],
                    r["burst_cpu_us_per_msg"],
                    r["burst_msgs_per_s"],
                    f"{r['paced_delivered'] + r['burst_delivered']}"
                    f"/{r['paced_sent'] + r['burst_sent']}",
                )
            )
        for name, r in row["ratios"].items():
            rows.append(
                (
                    "",
                    f"{name}/bare",
                    r["paced_cpu"],
                    "",
                    "",
                    r["burst_cpu"],
                    r["burst_throughput"],
                    f"CPU target <= {TARGET_RATIO}: {verdict(r['target_met'])}"
                    if "target_met" in r
                    else "(a floor, for reference)",
                )
            )
    p = results["params"]
    headers = (
        "message",
        "server",
        f"CPU us/msg @{p['rate']:.0f}/s",
        "p50 ms",
        "p99 ms",
        "CPU us/msg burst",
        "burst msg/s",
        "delivered",
    )
    title = f"relay: medians of {p['rounds']} rounds, {p['pairs']} pairs per server"
    if p.get("compress"):
        title += ", clients offer permessage-deflate"
    return table(title, headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=3000.0, help="paced messages per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="paced phase length")
    parser.add_argument("--burst", type=int, default=100, help="messages per socket, <= 200")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--refill", type=float, default=1.0, help="pause between rounds")
    parser.add_argument("--sizes", nargs="+", default=["sdp", "candidate"])
    parser.add_argument(
        "--compress",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do",
    )
    parser.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the lean relay (bench/lean_relay.py: uvloop, msgspec, raw payload): a floor",
    )
    parser.add_argument(
        "--variant",
        default="",
        help="also a broker with what-if patches (bench/broker_variant.py), e.g. uvloop,sdp",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clients.COMPRESS = 15 if args.compress else 0
    results = run_loop(run(args))
    print(report(results))
    name = "relay-compress" if args.compress else "relay"
    print(f"results: {write_results(name, results)}")
    return results


if __name__ == "__main__":
    main()
