"""Run the benchmarks one after the other, each in its own process: ``python -m bench``
(or ``make bench``); name some to run only those: ``python -m bench relay join_latency``.

Each prints its table and writes ``bench/results/<name>.json``; see docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import ROOT, env

BENCHMARKS = ("relay", "two_nodes", "idle_sockets", "join_latency")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        print(f"\n== python -m bench.{name}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env())
        print(f"== {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
