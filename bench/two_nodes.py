"""Two broker nodes on one Redis, each call's peers on different nodes, against one node.

Configurations, each measured in the same run with the same load (``--pairs`` calls, both
peers sending ``candidate`` messages to each other, ``--rate`` messages/s in total for
``--seconds``, open loop):

* ``one-node``: one ``python -m broker serve`` with its defaults (SQLite store, in-process bus);
* ``two-nodes``: two ``broker serve --redis-url`` processes on one ``redis-server`` started
  here (``--save '' --appendonly no``); every call's host is on node A, its guest on node B;
* ``bare-one``, ``bare-two`` and ``bare-two-redis``, the baselines: the bare relay
  (``bench.bare_relay``) as one process; as two processes that forward to each other over a
  plain TCP link; and as two processes that forward through Redis pub/sub with redis-py
  (``bench.bare_pair_relay``), each pair's sockets on different processes. ``bare-two`` over
  ``bare-one`` is what crossing two processes costs on this machine with no shared store at
  all (the floor under the two-node ratio), and ``bare-two-redis`` is two nodes via Redis
  written the plain way;
* ``one-node-redis`` (``--redis-single``): one node on that Redis, to tell the cost of the
  Redis bus from the cost of crossing nodes.

Reported: delivered messages/s, one-way latency p50/p99/max, and CPU per message of every
process involved (nodes and Redis). Targets: two nodes within 2x one node (CPU per message, all
processes counted; throughput), p99 < 10 ms; the p99 ratio to one node is reported as well.

    python -m bench.two_nodes [--rate 5000 --seconds 10 --pairs 80]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench import clients
from bench.common import (
    Busy,
    Server,
    free_port,
    latency_summary,
    quiet,
    ratio,
    run_loop,
    running,
    start_bare_relay,
    start_broker,
    start_redis,
    table,
    verdict,
    write_results,
)

P99_TARGET_MS = 10.0
RATIO_TARGET = 2.0


async def measure(
    http: Any,
    host: Server,
    guest: Server,
    watched: list[Server],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Book calls on ``host``, put each call's host on ``host`` and guest on ``guest``, and
    drive the paced load; CPU of every process in ``watched``."""
    family = await clients.Family.register(http, host.url)
    calls = await family.calls(args.pairs)
    pairs = await clients.broker_pairs(http, calls, host.ws_url, guest.ws_url)
    return await measure_pairs(pairs, watched, args, bare=False)


async def measure_bare(
    http: Any, a: Server, b: Server, watched: list[Server], args: argparse.Namespace
) -> dict[str, Any]:
    """The same load through bare relays: each pair's first socket on ``a``, second on ``b``."""
    pairs = await clients.bare_pairs(http, a.ws_url, args.pairs, a.name, b.ws_url)
    return await measure_pairs(pairs, watched, args, bare=True)


async def measure_pairs(
    pairs: list[clients.Pair], watched: list[Server], args: argparse.Namespace, bare: bool
) -> dict[str, Any]:
    load = clients.Load(pairs, "candidate")
    await asyncio.sleep(0.5)
    other_before = await quiet()
    busy = Busy(watched)
    rx = await load.paced(args.rate, args.seconds, drain=5.0)
    used = busy.done()
    cpu, wall = used["cpu_s"], used["wall_s"]
    stamps = [t for t in load.sent_ns if t]
    sent_span = (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else float("nan")
    got, span = len(rx.got), load.span_s()
    await load.stop()
    await clients.close_pairs(pairs)
    total_cpu = sum(cpu.values())
    return {
        "offered_per_s": args.rate,
        "sent": load.sent,
        "sent_per_s": round(load.sent / sent_span) if stamps else 0,
        "sockets_closed_by_server": len(load.closed),
        "close_codes": sorted({c for c in load.closed if c is not None}),
        "delivered": got,
        "delivered_per_s": round(got / span) if got else 0,
        "errors": len(rx.errors),
        "first_error": rx.errors[0] if rx.errors else None,
        "payload_check": clients.check_sample(rx, "candidate", bare=bare) or "ok",
        "latency": latency_summary(load.latencies_ns()),
        "cpu_s": cpu,
        "cpu_us_per_msg": {n: round(c / got * 1e6, 1) if got else None for n, c in cpu.items()},
        "cpu_us_per_msg_total": round(total_cpu / got * 1e6, 1) if got else None,
        "cpu_util": {n: round(c / wall, 3) for n, c in cpu.items()},
        "client_cpu_util": round(used["client_cpu_s"] / wall, 3),
        "other_cpus": used["other_cpus"],
        "other_cpus_before": other_before,
        "steal_ms": used["steal_ms"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"params": vars(args), "configs": {}}
    configs = results["configs"]
    async with clients.session() as http:
        one = start_broker("one-node")
        with running(one):
            configs["one-node"] = await measure(http, one, one, [one], args)
        redis = start_redis()
        with running(redis):
            url = f"redis://127.0.0.1:{redis.port}/0"
            a = start_broker("node-a", redis_url=url)
            b = start_broker("node-b", redis_url=url)
            with running(a, b):
                configs["two-nodes"] = await measure(http, a, b, [a, b, redis], args)
            if args.redis_single:
                single = start_broker("redis-node", redis_url=url)
                with running(single):
                    configs["one-node-redis"] = await measure(
                        http, single, single, [single, redis], args
                    )
            plain = ["--link-redis", url]
            bare_a = start_bare_relay("bare-redis-a", "bench.bare_pair_relay", plain)
            bare_b = start_bare_relay(
                "bare-redis-b",
                "bench.bare_pair_relay",
                [*plain, "--channel", "bare:b", "--other", "bare:a"],
            )
            with running(bare_a, bare_b):
                configs["bare-two-redis"] = await measure_bare(
                    http, bare_a, bare_b, [bare_a, bare_b, redis], args
                )
        bare_one = start_bare_relay("bare-one")
        with running(bare_one):
            configs["bare-one"] = await measure_bare(http, bare_one, bare_one, [bare_one], args)
        link = str(free_port())
        bare_a = start_bare_relay("bare-a", "bench.bare_pair_relay", ["--link-listen", link])
        with running(bare_a):
            bare_b = start_bare_relay("bare-b", "bench.bare_pair_relay", ["--link-connect", link])
            with running(bare_b):
                configs["bare-two"] = await measure_bare(
                    http, bare_a, bare_b, [bare_a, bare_b], args
                )
    base, two = configs["one-node"], configs["two-nodes"]
    results["ratios"] = {
        "throughput": ratio(two["delivered_per_s"], base["delivered_per_s"]),
        "p50": ratio(two["latency"]["p50_ms"], base["latency"]["p50_ms"]),
        "p99": ratio(two["latency"]["p99_ms"], base["latency"]["p99_ms"]),
        "cpu_per_msg": ratio(two["cpu_us_per_msg_total"] or 0, base["cpu_us_per_msg_total"] or 0),
        # the broker processes only (Redis left out): printed beside the verdict, not a target
        "cpu_per_msg_nodes": ratio(
            sum(v or 0 for n, v in two["cpu_us_per_msg"].items() if n != "redis"),
            base["cpu_us_per_msg_total"] or 0,
        ),
        # the floor: two bare processes against one, no shared store
        "cpu_per_msg_bare": ratio(
            configs["bare-two"]["cpu_us_per_msg_total"] or 0,
            configs["bare-one"]["cpu_us_per_msg_total"] or 0,
        ),
        # two bare processes through Redis pub/sub, the plain way, against one
        "cpu_per_msg_bare_redis": ratio(
            configs["bare-two-redis"]["cpu_us_per_msg_total"] or 0,
            configs["bare-one"]["cpu_us_per_msg_total"] or 0,
        ),
        # the broker's two nodes against the plain way through Redis
        "cpu_per_msg_vs_bare_redis": ratio(
            two["cpu_us_per_msg_total"] or 0,
            configs["bare-two-redis"]["cpu_us_per_msg_total"] or 0,
        ),
    }
    r = results["ratios"]
    results["targets"] = {
        "throughput_within_2x": r["throughput"] >= 1 / RATIO_TARGET,
        "cpu_within_2x": 0 < r["cpu_per_msg"] <= RATIO_TARGET,
        "p99_within_2x": r["p99"] <= RATIO_TARGET,
        "p99_under_10ms": two["latency"]["p99_ms"] < P99_TARGET_MS,
        "all_delivered": two["delivered"] == two["sent"],
        "bare_all_delivered": all(
            configs[n]["delivered"] == configs[n]["sent"]
            for n in ("bare-one", "bare-two", "bare-two-redis")
        ),
    }
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for name, c in results["configs"].items():
        cpu = ", ".join(f"{n} {v}" for n, v in c["cpu_us_per_msg"].items())
        rows.append(
            (
                name,
                c["sent_per_s"],
                c["delivered_per_s"],
                f"{c['delivered']}/{c['sent']}",
                c["latency"]["p50_ms"],
                c["latency"]["p99_ms"],
                c["latency"]["max_ms"],
                c["cpu_us_per_msg_total"],
                cpu,
            )
        )
    r, t = results["ratios"], results["targets"]
    rows.append(
        (
            "two/one",
            "",
            r["throughput"],
            "",
            r["p50"],
            r["p99"],
            "",
            r["cpu_per_msg"],
            f"CPU within 2x: {verdict(t['cpu_within_2x'] and t['throughput_within_2x'])} "
            f"(the nodes alone {r['cpu_per_msg_nodes']}x); "
            f"p99 < 10 ms: {verdict(t['p99_under_10ms'])} "
            f"(p99 within 2x: {verdict(t['p99_within_2x'])})",
        )
    )
    for label, value, what in (
        ("bare two/one", r["cpu_per_msg_bare"], "two processes, direct link: the floor"),
        ("bare redis/one", r["cpu_per_msg_bare_redis"], "two processes via Redis, plain way"),
        ("two/bare redis", r["cpu_per_msg_vs_bare_redis"], "the broker's two nodes against it"),
    ):
        rows.append((label, "", "", "", "", "", "", value, what))
    p = results["params"]
    headers = (
        "config",
        "sent/s",
        "delivered/s",
        "delivered",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU us/msg",
        "CPU us/msg by process",
    )
    title = (
        f"two nodes: {p['pairs']} calls, candidates at {p['rate']:.0f} msg/s offered "
        f"for {p['seconds']:.0f} s"
    )
    return table(title, headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=80, help="calls (2 sockets each)")
    parser.add_argument(
        "--redis-single", action="store_true", help="also one node on Redis (adds ~15 s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.rate / (2 * args.pairs) > 45:
        raise SystemExit("each socket may send 50 msg/s at most: use more --pairs")
    results = run_loop(run(args))
    print(report(results))
    print(f"results: {write_results('two_nodes', results)}")
    return results


if __name__ == "__main__":
    main()
