#!/usr/bin/env python3
"""Load generator vs locust: requests/s of `python -m loadtest` and of locust's FastHttpUser, side by side.

Both drive the same tiny nginx response on 127.0.0.1 with the same settings (32 users, no wait, one
process each), in alternating rounds so a noisy neighbour hurts both alike. Throughput is counted by nginx
itself (stub_status), over the same steady window of each run, not taken from either tool's own report.
Both run as a locust user would: cookie jar on (nginx sets a session cookie on every answer, which each
tool stores and sends back) and redirects followed (the default of both; these answers are 200s).

locust is installed into a throwaway venv (build/locust-venv) for this comparison only; it is not a
dependency of the project. nginx-light is installed with apt-get when missing and we are root.

    .venv/bin/python bench/loadgen_vs_locust.py [--users 32] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCUST_VENV = ROOT / "build" / "locust-venv"

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
    uwsgi_temp_path {dir}; scgi_temp_path {dir};
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port};
        location = /nginx_status {{ stub_status; }}
        location / {{ add_header Set-Cookie "sid=bench; Path=/"; return 200 "ok\\n"; }}
    }}
}}
"""

OURS = """\
from loadtest import HttpUser, constant, task


class Bench(HttpUser):
    wait_time = constant(0)

    @task
    async def index(self):
        await self.client.get("/")
"""

THEIRS = """\
from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(0)

    @task
    def index(self):
        self.client.get("/")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path:
        return path
    if os.geteuid() != 0:
        sys.exit("nginx is missing; install nginx-light (apt-get install nginx-light) and re-run")
    subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def ensure_locust() -> Path:
    locust = LOCUST_VENV / "bin" / "locust"
    if not locust.exists():
        print(f"installing locust into {LOCUST_VENV} (for this comparison only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LOCUST_VENV)], check=True)
        subprocess.run([str(LOCUST_VENV / "bin" / "pip"), "install", "-q", "locust"], check=True)
    return locust


def served(port: int) -> int:
    """Requests nginx has handled so far (stub_status' third counter); our own probe adds one each."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/nginx_status", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return int(lines[2].split()[2])


def measure(cmd: list[str], port: int, warmup: float, seconds: float, cwd: str) -> float:
    """Start a generator, let it warm up, count what nginx serves over `seconds`, then let it finish."""
    # PYTHONPATH: the repo's loadtest is found even where the venv's editable install is stale.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Wait (bounded) until the generator's requests arrive, then a warm-up, then the counted window.
        base = served(port)
        deadline = time.monotonic() + 30
        while served(port) - base < 100:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} sent no load: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.1)
        time.sleep(warmup)
        start_n, start_t = served(port), time.monotonic()
        time.sleep(seconds)
        end_n, end_t = served(port), time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return (end_n - start_n - 1) / (end_t - start_t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="counted window per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    nginx = ensure_nginx()
    locust = ensure_locust()
    port = free_port()
    run_for = f"{int(args.warmup + args.seconds + 30)}s"  # upper bound; each run is ended once counted
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-") as tmp:
        Path(tmp, "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, port=port))
        Path(tmp, "ours.py").write_text(OURS)
        Path(tmp, "theirs.py").write_text(THEIRS)
        server = subprocess.Popen([nginx, "-c", f"{tmp}/nginx.conf", "-p", tmp],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    served(port)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"nginx did not start: {server.stderr.read().decode()}")  # type: ignore[union-attr]
                    time.sleep(0.1)
            host = f"http://127.0.0.1:{port}"
            common = ["-H", host, "-u", str(args.users), "-r", str(args.users), "-t", run_for, "--headless"]
            ours = [sys.executable, "-m", "loadtest", "-f", f"{tmp}/ours.py", *common, "--only-summary"]
            theirs = [str(locust), "-f", f"{tmp}/theirs.py", *common, "--only-summary", "--loglevel", "WARNING"]
            env_note = (f"{os.cpu_count()} CPUs, nginx 1 worker, {args.users} users, no wait, one process each, "
                        "cookies and redirects on")
            print(f"Load generator vs locust FastHttpUser ({env_note}); req/s counted by nginx over "
                  f"{args.seconds:.0f} s after {args.warmup:.0f} s warm-up", flush=True)
            print(f"{'round':>5} {'loadtest req/s':>15} {'locust req/s':>13} {'ratio':>6}", flush=True)
            ratios, mine, loc = [], [], []
            for r in range(1, args.rounds + 1):
                order = [("ours", ours), ("locust", theirs)]
                if r % 2 == 0:
                    order.reverse()  # alternate who goes first
                got = {name: measure(cmd, port, args.warmup, args.seconds, tmp) for name, cmd in order}
                mine.append(got["ours"])
                loc.append(got["locust"])
                ratios.append(got["ours"] / got["locust"])
                print(f"{r:>5} {got['ours']:>15,.0f} {got['locust']:>13,.0f} {ratios[-1]:>6.2f}", flush=True)
            print(f"{'median':>5} {statistics.median(mine):>15,.0f} {statistics.median(loc):>13,.0f} "
                  f"{statistics.median(ratios):>6.2f}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
