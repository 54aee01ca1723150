"""What every benchmark needs: processes on loopback, their CPU time and memory from /proc,
percentiles, the machine's description, a table on stdout and JSON in ``bench/results/``.

Nothing here imports the broker: the servers run as their own processes and are measured
from outside, the way an operator would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DATA = BENCH / "data"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")


# machine and processes


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "load_avg_at_start": os.getloadavg(),
        "commit": _commit(),
    }


def _commit() -> str:
    """The commit measured, with ``+changes`` when broker/ or signaling/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "broker", "signaling"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+changes" if dirty else "")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of the whole process (all its threads), /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (fields 14, 15)


def on_cpu_ns(pid: int) -> int | None:
    """Time the process's live threads spent on a CPU, in ns, from
    ``/proc/<pid>/task/*/schedstat`` (exact; ``/proc/<pid>/stat`` counts 10 ms ticks, which is
    3-10% of a benchmark phase). None where the kernel keeps no schedstat."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        except (OSError, ValueError, IndexError):
            return None
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all its threads), from /proc/<pid>/stat."""
    return sum(cpu_times(pid))


def _proc_stat() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = _proc_stat()[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def steal_seconds() -> float:
    """Time the hypervisor ran something else while our CPUs wanted to run (all CPUs)."""
    return _proc_stat()[7] / CLK_TCK


def wait_for_quiet(max_wait: float = 15.0, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until the rest of the machine uses under ``threshold``
    CPUs over half a second; returns what it used at the last look."""
    deadline = time.monotonic() + max_wait
    while True:
        m0, t0 = machine_busy_seconds(), time.perf_counter()
        time.sleep(0.5)
        used = (machine_busy_seconds() - m0) / (time.perf_counter() - t0)
        if used < threshold or time.monotonic() > deadline:
            return round(used, 2)


async def quiet(max_wait: float = 15.0) -> float:
    """``wait_for_quiet`` without blocking the event loop (sockets keep answering pings)."""
    return await asyncio.to_thread(wait_for_quiet, max_wait)


class Busy:
    """Who used the CPUs during a phase: the watched servers, this client, everyone else.

    The machine is shared (other people's tests run on it), so every phase reports how many
    CPUs the rest of the machine used meanwhile: its figures are only as clean as that."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers = list(servers)
        self.t0 = time.perf_counter()
        self.me0 = time.process_time()
        self.machine0 = machine_busy_seconds()
        self.steal0 = steal_seconds()
        self.cpu0 = [cpu_times(s.pid) for s in self.servers]
        self.ns0 = [on_cpu_ns(s.pid) for s in self.servers]

    def done(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        cpu, user = {}, {}
        for server, t0, ns0 in zip(self.servers, self.cpu0, self.ns0, strict=True):
            t = cpu_times(server.pid)
            ticks = sum(t) - sum(t0)
            ns = on_cpu_ns(server.pid)
            exact = None if ns is None or ns0 is None else (ns - ns0) / 1e9
            # exact unless a thread ended during the phase (its time is then only in the ticks)
            usable = exact is not None and ticks - exact < 2 / CLK_TCK + 0.05 * exact
            cpu[server.name] = exact if usable and exact is not None else ticks
            user[server.name] = t[0] - t0[0]
        mine = time.process_time() - self.me0
        machine = machine_busy_seconds() - self.machine0
        return {
            "wall_s": round(wall, 3),
            "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
            # the share of it spent in user space (the rest is the kernel: syscalls, wake-ups)
            "user_share": {
                k: round(min(1.0, user[k] / v), 2) if v else None for k, v in cpu.items()
            },
            "client_cpu_s": round(mine, 3),
            "other_cpus": round(max(0.0, machine - mine - sum(cpu.values())) / wall, 2),
            "steal_ms": round((steal_seconds() - self.steal0) * 1000),
        }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit as far as the hard limit allows; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# glibc's malloc as a long-running server finds it after a while, for every server from the
# start. The stdlib event loop reads into a fresh 256 KiB buffer: above glibc's initial 128 KiB
# mmap threshold, so each read costs an mmap, an mremap, a munmap and two page faults until
# the first buffer freed whole (a read that found nothing) raises the threshold to its size,
# and the trim threshold to twice that. When that happens varies from run to run, and the bare
# relay's CPU per candidate moved by half between the two states (docs/performance.md). A
# GLIBC_TUNABLES of the caller's own is kept.
MALLOC_SETTLED = "glibc.malloc.mmap_threshold=524288:glibc.malloc.trim_threshold=1048576"


def env() -> dict[str, str]:
    """The environment for child processes: no ``BROKER_*`` settings, the repo importable,
    malloc settled (``MALLOC_SETTLED``)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    out.setdefault("GLIBC_TUNABLES", MALLOC_SETTLED)
    out["PYTHONPATH"] = str(ROOT) + (os.pathsep + out["PYTHONPATH"] if "PYTHONPATH" in out else "")
    out["PYTHONUNBUFFERED"] = "1"
    return out


@dataclass
class Server:
    """A child process listening on ``port``; output goes to ``log``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    scratch: Path | None = None  # removed when the server stops

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def log_dir() -> Path:
    path = RESULTS / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def spawn(
    name: str,
    args: Sequence[str],
    port: int,
    ready: str = "/healthz",
    prefix: Sequence[str] = (),
    deadline: float = 30.0,
) -> Server:
    """Start ``args`` (after ``prefix``: a tool that runs them, like valgrind) and wait until
    ``GET ready`` answers 200 (or the port accepts, ready="")."""
    log = log_dir() / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env(),
        )
    server = Server(name, port, proc, log)
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        if _answers(port, ready):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not start in time:\n{log.read_text()[-2000:]}")


def _answers(port: int, path: str) -> bool:
    try:
        if not path:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_broker(
    name: str = "broker",
    redis_url: str | None = None,
    extra: Sequence[str] = (),
    variant: str | None = None,
    prefix: Sequence[str] = (),
    deadline: float = 30.0,
) -> Server:
    """``python -m broker serve`` on a free port with a fresh data dir: all defaults (logging at
    INFO included), except a join window opening 24 h early, so that one pair of users can have
    many back-to-back calls that are all joinable now."""
    port = free_port()
    (RESULTS / "data").mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix=f"{name}-{port}-", dir=RESULTS / "data"))
    args = [sys.executable, "-m", "broker"]
    if variant is not None:  # what-if patches, see bench/broker_variant.py
        args = [sys.executable, "-m", "bench.broker_variant", "--patch", variant, "--"]
    args += ["serve", "--port", str(port), "--data-dir", str(data)]
    args += ["--join-before-minutes", "1440"]
    if redis_url:
        args += ["--redis-url", redis_url]
    server = spawn(name, [*args, *extra], port, prefix=prefix, deadline=deadline)
    server.scratch = data
    return server


def start_bare_relay(
    name: str = "bare-relay",
    module: str = "bench.bare_relay",
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
    deadline: float = 30.0,
) -> Server:
    """The baseline relay (or, with ``module="bench.lean_relay"``, the lean one; or
    ``bench.bare_pair_relay`` with its link in ``extra``)."""
    port = free_port()
    args = [sys.executable, "-m", module, "--port", str(port), *extra]
    return spawn(name, args, port, prefix=prefix, deadline=deadline)


def start_redis() -> Server:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--protected-mode", "yes", "--maxclients", "10000"]
    return spawn("redis", args, port, ready="")


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for s in servers:
            s.stop()


# figures


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def latency_summary(ns: list[int]) -> dict[str, float]:
    values = sorted(v / 1e6 for v in ns)
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(values[-1], 3) if values else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(name: str, results: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (the latest) and a timestamped copy next to it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"benchmark": name, "at": stamp, "machine": machine(), **results}
    text = json.dumps(doc, indent=2, default=str)
    (RESULTS / f"{name}-{stamp}.json").write_text(text)
    latest = RESULTS / f"{name}.json"
    latest.write_text(text)
    return latest


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Clients run on uvloop when it is installed, so they take less of the shared CPUs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
