"""CPU the balancer spends per request, this tree against another checkout, interleaved.

Throughput ratios need a quiet machine; the balancer process's own CPU time per request (utime +
stime from /proc over a `wrk -t1 -c32` run against one nginx backend) is less sensitive to what
else runs. Rounds alternate which tree goes first (the second of a pair tends to lose).
Run: .venv/bin/python bench/routes_cpu_per_request.py OTHER_TREE [--rounds 6] [--duration 4]
(make OTHER_TREE with e.g. `mkdir /tmp/main && git archive main | tar -x -C /tmp/main`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_vs_nginx as bench  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(tree: Path, backend: int, seconds: float) -> tuple[float, float]:
    """(CPU microseconds per request, requests per second) of `python -m lb` from `tree`."""
    port = bench.free_port()
    env = dict(os.environ, LB_LISTEN=f"127.0.0.1:{port}", LB_ADMIN_LISTEN="127.0.0.1:0",
               LB_BACKENDS=f"127.0.0.1:{backend}", LB_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "lb"], cwd=tree, env=env)
    try:
        bench.wait_port(port)
        bench.wrk(port, 1)
        before = cpu_seconds(proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, check=True).stdout
        used = cpu_seconds(proc.pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        return used / requests * 1e6, requests / seconds
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    bench.ensure_tools()
    trees = {"this": Path(__file__).resolve().parent.parent, "other": args.other.resolve()}
    results: dict[str, list[float]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        backend = bench.free_port()
        nginx = bench.nginx(bench.BACKEND_SERVER.format(port=backend), Path(tmp), "backend")
        try:
            bench.wait_port(backend)
            for i in range(args.rounds):
                order = ("other", "this") if i % 2 == 0 else ("this", "other")
                for name in order:
                    us, rps = run(trees[name], backend, args.duration)
                    results[name].append(us)
                    print(f"round {i + 1} {name:<6} {us:7.1f} us CPU/request  {rps:8.0f} req/s", flush=True)
        finally:
            nginx.terminate()
            nginx.wait(10)
    for name, values in results.items():
        values.sort()
        print(f"{name:<6} median {values[len(values) // 2]:.1f} us/request, min {values[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
