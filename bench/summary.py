"""The latest results (``bench/results/<name>.json``) as Markdown tables, for
docs/performance.md: ``python -m bench.summary``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bench.common import RESULTS


def md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def relay(doc: dict[str, Any]) -> str:
    rows = []
    for kind, row in doc["sizes"].items():
        for name in row["rounds"]:
            r = row[name]
            ratios = row["ratios"].get(name, {})
            rows.append(
                (
                    f"{kind} ({row['client_frame_bytes']} B)",
                    name,
                    r["paced_cpu_us_per_msg"],
                    ratios.get("paced_cpu", ""),
                    r["burst_cpu_us_per_msg"],
                    ratios.get("burst_cpu", ""),
                    r["burst_msgs_per_s"],
                    f"{r['paced_p50_ms']} / {r['paced_p99_ms']}",
                    f"{r['paced_delivered'] + r['burst_delivered']}"
                    f"/{r['paced_sent'] + r['burst_sent']}",
                    r["other_cpus_max"],
                )
            )
    p = doc["params"]
    headers = (
        "message",
        "server",
        f"CPU us/msg at {p['rate']:.0f}/s",
        "ratio",
        "CPU us/msg saturated",
        "ratio",
        "msg/s saturated",
        "p50 / p99 ms",
        "delivered",
        "other CPUs (max)",
    )
    return md(headers, rows)


def two_nodes(doc: dict[str, Any]) -> str:
    rows = []
    for name, c in doc["configs"].items():
        rows.append(
            (
                name,
                c["sent_per_s"],
                c["delivered_per_s"],
                f"{c['delivered']}/{c['sent']}",
                c["latency"]["p50_ms"],
                c["latency"]["p99_ms"],
                c["cpu_us_per_msg_total"],
                ", ".join(f"{n} {v}" for n, v in c["cpu_us_per_msg"].items()),
                c["other_cpus"],
            )
        )
    r = doc["ratios"]
    rows.append(("two/one", "", r["throughput"], "", r["p50"], r["p99"], r["cpu_per_msg"], "", ""))
    for label, key in (
        ("bare two/one", "cpu_per_msg_bare"),
        ("bare redis/one", "cpu_per_msg_bare_redis"),
        ("two/bare redis", "cpu_per_msg_vs_bare_redis"),
    ):
        if key in r:  # results from before the baselines have none
            rows.append((label, "", "", "", "", "", r[key], "", ""))
    headers = (
        "config",
        "sent/s",
        "delivered/s",
        "delivered",
        "p50 ms",
        "p99 ms",
        "CPU us/msg (all)",
        "by process",
        "other CPUs",
    )
    return md(headers, rows)


def idle_sockets(doc: dict[str, Any]) -> str:
    rows = []
    for name in ("bare", "broker"):
        r = doc[name]
        rows.append(
            (
                name,
                f"{r['opened']}/{r['requested']}",
                r["connect_s"],
                r["server_cpu_us_per_handshake"],
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["rss_kb_per_socket"],
            )
        )
    rows.append(("broker/bare", "", "", "", "", "", doc["ratio_rss_per_socket"]))
    headers = (
        "server",
        "sockets",
        "connect s",
        "CPU us/handshake",
        "RSS before MB",
        "RSS after MB",
        "KB/socket",
    )
    return md(headers, rows)


def join_latency(doc: dict[str, Any]) -> str:
    rows = []
    for name in [n for n in doc if n == "bare" or n.startswith("broker")]:
        r = doc[name]
        rows.append(
            (
                name,
                f"{r['ok']}/{r['attempted']}",
                r["connect_to_done"]["p50_ms"],
                r["connect_to_done"]["p99_ms"],
                r["after_connect"]["p50_ms"],
                r["after_connect"]["p99_ms"],
                r["server_cpu_ms_per_join"],
                r["other_cpus"],
            )
        )
    r = doc["ratios"]
    rows.append(("broker/bare", "", r["p50"], r["p99"], "", "", "", ""))
    headers = (
        "server",
        "done",
        "p50 ms",
        "p99 ms",
        "after connect p50",
        "p99",
        "server CPU ms each",
        "other CPUs",
    )
    return md(headers, rows)


def main() -> None:
    for name, render in (
        ("relay", relay),
        ("relay-compress", relay),
        ("two_nodes", two_nodes),
        ("idle_sockets", idle_sockets),
        ("join_latency", join_latency),
    ):
        doc = load(name)
        if doc is None:
            continue
        m = doc["machine"]
        print(
            f"### {name} ({doc['at']}, commit {m.get('commit', '?')}, "
            f"{m['nproc']} CPUs, load {m['load_avg_at_start'][0]:.1f})"
        )
        print(f"params: {json.dumps(doc.get('params', {}))}\n")
        print(render(doc))
        print()


if __name__ == "__main__":
    main()
