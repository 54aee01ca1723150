"""Join latency: new sockets joining family calls at a fixed rate, against the bare relay's
connect + first message echo at the same rate.

Broker: ``--calls`` family calls are booked and both join tokens of each are fetched first
(``POST /api/v1/sessions/{id}/join``); then, open loop at ``--rate`` per second, a new socket
connects, says ``hello`` (join token) -> ``welcome``, ``join`` -> ``joined``. Each call's host
joins first, its guest right after (so half the joins meet a peer: ``peer-joined``, the call
starting, its event). Sockets stay open until the end. Reported: connect -> joined, and
hello -> joined (the part the broker's own work decides), p50/p99.

Bare relay: connect, ``hello`` -> ``welcome`` at the same rate.

    python -m bench.join_latency [--rate 100 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

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

Attempt = Callable[[int], Awaitable[dict[str, int]]]

P99_TARGET_MS = 20.0  # the issue: hello + join -> joined, p99, at 100 joins/s


async def open_loop(
    rate: float, count: int, attempt: Attempt
) -> tuple[list[dict[str, int]], list[str]]:
    """Start ``attempt(i)`` at ``i / rate`` seconds, for i < count; (timings, errors)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(attempt(i)))
    done = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [d for d in done if isinstance(d, dict)]
    return ok, [repr(d)[:200] for d in done if isinstance(d, BaseException)]


class Holder:
    """Keeps every socket open (and read) until the end of the run."""

    def __init__(self) -> None:
        self.socks: list[aiohttp.ClientWebSocketResponse] = []
        self.tasks: list[asyncio.Task[None]] = []

    def keep(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.socks.append(ws)
        self.tasks.append(asyncio.create_task(self._drain(ws)))

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.socks), return_exceptions=True)
        for t in self.tasks:
            t.cancel()


async def broker_phase(
    http: aiohttp.ClientSession, broker: Server, args: argparse.Namespace
) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    family = await clients.Family.register(http, broker.url)
    calls = await family.calls(-(-count // 2))
    tokens = [t for c in calls for t in (c.host_token, c.guest_token)][:count]
    holder = Holder()

    async def attempt(i: int) -> dict[str, int]:
        t0 = time.perf_counter_ns()
        ws = await http.ws_connect(broker.ws_url, max_msg_size=clients.WS_MAX)
        t1 = time.perf_counter_ns()
        await ws.send_str(json.dumps({"type": "hello", "token": tokens[i]}))
        await clients.expect(ws, "welcome")
        t2 = time.perf_counter_ns()
        await ws.send_str('{"type":"join"}')
        await clients.expect(ws, "joined")
        t3 = time.perf_counter_ns()
        holder.keep(ws)
        return {"connect": t1 - t0, "hello": t2 - t1, "join": t3 - t2}

    await asyncio.sleep(0.5)
    await quiet()
    busy = Busy([broker])
    done, failed = await open_loop(args.rate, count, attempt)
    used = busy.done()
    await holder.close()
    return summarize(done, failed, count, used, broker.name)


async def bare_phase(
    http: aiohttp.ClientSession, bare: Server, args: argparse.Namespace
) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    holder = Holder()

    async def attempt(i: int) -> dict[str, int]:
        t0 = time.perf_counter_ns()
        ws = await http.ws_connect(bare.ws_url, max_msg_size=clients.WS_MAX)
        t1 = time.perf_counter_ns()
        await ws.send_str(json.dumps({"type": "hello", "peer": f"join-{i}"}))
        await clients.expect(ws, "welcome")
        t2 = time.perf_counter_ns()
        holder.keep(ws)
        return {"connect": t1 - t0, "hello": t2 - t1, "join": 0}

    await quiet()
    busy = Busy([bare])
    done, failed = await open_loop(args.rate, count, attempt)
    used = busy.done()
    await holder.close()
    return summarize(done, failed, count, used, bare.name)


def summarize(
    done: list[dict[str, int]], failed: list[str], count: int, used: dict[str, Any], name: str
) -> dict[str, Any]:
    total = [d["connect"] + d["hello"] + d["join"] for d in done]
    after_connect = [d["hello"] + d["join"] for d in done]
    return {
        "attempted": count,
        "ok": len(done),
        "failed": len(failed),
        "first_error": failed[0] if failed else None,
        "connect_to_done": latency_summary(total),
        "after_connect": latency_summary(after_connect),
        "connect_only": latency_summary([d["connect"] for d in done]),
        "server_cpu_ms_per_join": round(used["cpu_s"][name] / len(done) * 1e3, 2) if done else None,
        "server_cpu_util": round(used["cpu_s"][name] / used["wall_s"], 3),
        "other_cpus": used["other_cpus"],
        "steal_ms": used["steal_ms"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"params": vars(args)}
    bare, broker = start_bare_relay("bare"), start_broker("broker")
    variant = start_broker("variant", variant=args.variant) if args.variant else None
    with running(bare, broker, *([variant] if variant else [])):
        async with clients.session() as http:
            results["bare"] = await bare_phase(http, bare, args)
            results["broker"] = await broker_phase(http, broker, args)
            if variant is not None:
                results[f"broker+{args.variant}"] = await broker_phase(http, variant, args)
    b, k = results["bare"], results["broker"]
    results["ratios"] = {
        "p50": ratio(k["connect_to_done"]["p50_ms"], b["connect_to_done"]["p50_ms"]),
        "p99": ratio(k["connect_to_done"]["p99_ms"], b["connect_to_done"]["p99_ms"]),
    }
    results["all_joined"] = k["ok"] == k["attempted"]
    results["targets"] = {  # the measure: hello + join -> joined; with the connect too
        "p99_hello_to_joined_under_20ms": k["after_connect"]["p99_ms"] < P99_TARGET_MS,
        "p99_connect_to_joined_under_20ms": k["connect_to_done"]["p99_ms"] < P99_TARGET_MS,
    }
    return results


def report(results: dict[str, Any]) -> str:
    rows: list[tuple[Any, ...]] = []
    names = [n for n in results if n == "bare" or n.startswith("broker")]
    for name in names:
        what = "connect + hello -> welcome" if name == "bare" else "connect + hello + join"
        r = results[name]
        rows.append(
            (
                name,
                what,
                f"{r['ok']}/{r['attempted']}",
                r["connect_to_done"]["p50_ms"],
                r["connect_to_done"]["p99_ms"],
                r["after_connect"]["p50_ms"],
                r["after_connect"]["p99_ms"],
                r["server_cpu_ms_per_join"],
            )
        )
    r, t = results["ratios"], results["targets"]
    rows.append(
        (
            "broker/bare",
            "",
            f"all joined: {verdict(results['all_joined'])}",
            r["p50"],
            r["p99"],
            "",
            f"< 20 ms: {verdict(t['p99_hello_to_joined_under_20ms'])}",
            f"(with connect: {verdict(t['p99_connect_to_joined_under_20ms'])})",
        )
    )
    p = results["params"]
    headers = (
        "server",
        "measured",
        "done",
        "p50 ms",
        "p99 ms",
        "hello -> joined p50",
        "p99",
        "server CPU ms each",
    )
    return table(f"join latency at {p['rate']:.0f}/s for {p['seconds']:.0f} s", headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="joins per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--variant", default="", help="also a broker with what-if patches (bench/broker_variant.py)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run_loop(run(args))
    print(report(results))
    print(f"results: {write_results('join_latency', results)}")
    return results


if __name__ == "__main__":
    main()
