"""Memory per idle socket: K authenticated idle sockets on one broker, against K plain sockets
on the bare relay.

Broker: every socket says ``hello`` with a family member's access token, which makes it an
idle, ringing connection (a TV waiting for calls), and gets ``welcome``. Bare relay: every
socket says ``hello`` with a peer id and gets ``welcome``. Client sockets are spread over
``--clients`` processes (each process may only hold so many files) and answer the broker's
heartbeat pings while they wait. Reported: the server's RSS after minus RSS before (after a
warm-up), divided by the sockets open, and the server CPU per handshake.

K defaults to 20,000, capped by the open-file limit: the server holds one descriptor per
socket, and ``RLIMIT_NOFILE`` can only be raised up to its hard limit without privileges.

    python -m bench.idle_sockets [--sockets 20000 --clients 2 --deadline 40]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
from typing import Any

from bench import clients
from bench.common import (
    ROOT,
    Server,
    env,
    raise_nofile,
    ratio,
    run_loop,
    running,
    start_bare_relay,
    start_broker,
    table,
    verdict,
    wait_for_quiet,
    write_results,
)

TARGET_KB = 30.0
SERVER_SPARE_FILES = 100  # descriptors the server needs besides its sockets


# the client processes: a minimal WebSocket client (aiohttp's costs ~1 ms of client CPU per
# connection; this one a tenth of that, so the server, not the client, sets the pace)


class IdleSocket(asyncio.Protocol):
    """One client socket: upgrade, send ``hello``, wait for ``welcome``, answer pings."""

    def __init__(self, host: str, path: str, hello: bytes) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.hello = hello
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # asyncio's or uvloop's
        self.buffer = b""
        self.upgraded = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError("closed before welcome"))

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame; the mask key is zero, so the payload goes as it is."""
        n = len(payload)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        assert self.transport is not None
        self.transport.write(bytes([0x80 | opcode]) + size + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.fail(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                return
            self.upgraded, self.buffer = True, rest
            self.send(0x1, self.hello)
        while len(self.buffer) >= 2:
            opcode, n, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if n == 126:
                n, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif n == 127:
                n, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + n:
                return
            payload, self.buffer = self.buffer[start : start + n], self.buffer[start + n :]
            if opcode == 0x9:
                self.send(0xA, payload)  # pong
            elif opcode == 0x8:
                self.fail("closed by the server")
            elif opcode == 0x1 and not self.welcomed.done():
                if b"welcome" in payload:
                    self.welcomed.set_result(None)
                elif b"error" in payload:
                    self.fail(payload[:200].decode(errors="replace"))

    def fail(self, why: str) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.send(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


async def hold(
    kind: str, url: str, count: int, tag: str, concurrency: int, deadline: float
) -> None:
    """Open ``count`` sockets, report on stdout, keep them until stdin says so, close."""
    token = os.environ.get("BENCH_TOKEN", "")
    where = urllib.parse.urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    socks: list[IdleSocket] = []
    errors: list[str] = []
    stop_at = time.monotonic() + deadline

    async def one(i: int) -> None:
        async with sem:
            if time.monotonic() > stop_at:
                return
            if kind == "broker":
                hello = {"type": "hello", "token": token}
            else:
                hello = {"type": "hello", "peer": f"{tag}-{i}"}
            body = json.dumps(hello).encode()
            try:
                _, sock = await loop.create_connection(
                    lambda: IdleSocket(f"{host}:{port}", where.path, body), host, port
                )
                await asyncio.wait_for(sock.welcomed, 30)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                return
            socks.append(sock)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    report = {"opened": len(socks), "failed": len(errors), "seconds": time.monotonic() - t0}
    report["first_error"] = errors[0] if errors else None
    print(json.dumps(report), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"still_open_at_close": sum(1 for s in socks if not s.closed)}), flush=True)
    for sock in socks:
        sock.close()
    await asyncio.sleep(0.5)


# the orchestrator


def spawn_clients(
    kind: str, url: str, total: int, n: int, token: str, args: argparse.Namespace
) -> list[subprocess.Popen[str]]:
    procs = []
    share = -(-total // n)
    for i in range(n):
        count = min(share, total - i * share)
        cmd = [sys.executable, "-m", "bench.idle_sockets", "--client", kind, url, str(count)]
        cmd += ["--tag", f"c{i}", "--concurrency", str(args.concurrency)]
        cmd += ["--deadline", str(args.deadline)]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**env(), "BENCH_TOKEN": token},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a client process exited with {proc.wait()}")
    return dict(json.loads(line))


async def warm_up(server: Server, kind: str, token: str) -> None:
    """A few sockets opened and closed, so that code paths and caches are in place."""
    async with clients.session() as http:
        for i in range(50):
            if kind == "broker":
                sock = await clients.broker_socket(http, server.ws_url, token, join=False)
            else:
                sock = await clients.bare_socket(http, server.ws_url, f"warm-{i}")
            await sock.ws.close()
    await asyncio.sleep(1.0)


def measure(server: Server, kind: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    run_loop(warm_up(server, kind, token))
    other_before = wait_for_quiet()
    rss0, cpu0, t0 = server.rss(), server.cpu(), time.monotonic()
    procs = spawn_clients(kind, server.ws_url, args.sockets, args.clients, token, args)
    try:
        reports = [read_json(p) for p in procs]
        opened = sum(r["opened"] for r in reports)
        connect_s = time.monotonic() - t0
        cpu = server.cpu() - cpu0
        time.sleep(args.settle)
        rss1 = server.rss()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("close\n")
            p.stdin.flush()
        closing = [read_json(p) for p in procs]
    finally:
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    per_socket = (rss1 - rss0) / opened if opened else float("nan")
    return {
        "other_cpus_before": other_before,
        "requested": args.sockets,
        "opened": opened,
        "failed": sum(r["failed"] for r in reports),
        "first_error": next((r["first_error"] for r in reports if r["first_error"]), None),
        "still_open_after_settle": sum(c["still_open_at_close"] for c in closing),
        "connect_s": round(connect_s, 2),
        "handshakes_per_s": round(opened / connect_s) if opened else 0,
        "server_cpu_us_per_handshake": round(cpu / opened * 1e6) if opened else None,
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_kb_per_socket": round(per_socket / 1024, 2),
    }


async def login_to(server: Server) -> str:
    async with clients.session() as http:
        return (await clients.Family.register(http, server.url)).host.token


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile(1 << 20)  # children inherit it (servers and clients)
    if args.sockets > limit - SERVER_SPARE_FILES:
        print(
            f"open-file limit {limit} (hard, in this environment): "
            f"{args.sockets} sockets capped at {limit - SERVER_SPARE_FILES}",
            flush=True,
        )
        args.sockets = limit - SERVER_SPARE_FILES
    per_client = -(-args.sockets // args.clients)
    if per_client > limit - SERVER_SPARE_FILES:
        raise SystemExit(f"{per_client} sockets per client process: use more --clients")
    results: dict[str, Any] = {"params": vars(args), "nofile_limit": limit}
    bare = start_bare_relay("bare")
    with running(bare):
        results["bare"] = measure(bare, "bare", "", args)
    broker = start_broker("broker")
    with running(broker):

        async def login() -> str:
            return await login_to(broker)

        token = run_loop(login())
        results["broker"] = measure(broker, "broker", token, args)
    if args.variant:
        variant = start_broker("variant", variant=args.variant)
        with running(variant):
            token = run_loop(login_to(variant))
            results[f"broker+{args.variant}"] = measure(variant, "broker", token, args)
    b, k = results["bare"], results["broker"]
    results["ratio_rss_per_socket"] = ratio(k["rss_kb_per_socket"], b["rss_kb_per_socket"])
    results["target_met"] = k["rss_kb_per_socket"] < TARGET_KB
    results["all_opened"] = k["opened"] == k["requested"]
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for name in [n for n in results if n == "bare" or n.startswith("broker")]:
        r = results[name]
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
    rows.append(
        (
            "broker/bare",
            "",
            "",
            "",
            "",
            "",
            f"{results['ratio_rss_per_socket']} "
            f"(target < {TARGET_KB:.0f} KB: {verdict(results['target_met'])})",
        )
    )
    headers = (
        "server",
        "sockets",
        "connect s",
        "CPU us/handshake",
        "RSS before MB",
        "RSS after MB",
        "KB per socket",
    )
    return table("idle sockets: server memory per authenticated idle socket", headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=48, help="handshakes per client")
    parser.add_argument("--deadline", type=float, default=45.0, help="seconds to connect")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before RSS")
    parser.add_argument("--tag", default="c0")
    parser.add_argument(
        "--variant", default="", help="also a broker with what-if patches (bench/broker_variant.py)"
    )
    parser.add_argument(
        "--client", nargs=3, metavar=("KIND", "URL", "COUNT"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.client:
        kind, url, count = args.client
        raise_nofile(1 << 20)
        run_loop(hold(kind, url, int(count), args.tag, args.concurrency, args.deadline))
        return None
    results = run(args)
    print(report(results))
    print(f"results: {write_results('idle_sockets', results)}")
    return results


if __name__ == "__main__":
    main()
