"""Swarmscale's proxy side by side with nginx, in front of the same backend, measured with wrk.

The backend is an nginx returning a tiny fixed reply (its own process, one worker). In front of it,
in turn: nginx as a one-worker reverse proxy with upstream keepalive, and `python -m lb`.
wrk -t1 -c32 hits each for a few alternating rounds; the best round of each is compared.
Run: .venv/bin/python bench/proxy_vs_nginx.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One worker, in the foreground, everything under the temporary directory; `{server}` is the rest.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
    uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
{server}
}}
"""

BACKEND_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
    }}
"""

PROXY_SERVER = """
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
"""


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk")) if not shutil.which(tool)
               and not Path("/usr/sbin/" + tool).exists()]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def nginx(server: str, workdir: Path, name: str) -> subprocess.Popen:
    path = workdir / f"{name}.conf"
    path.write_text(NGINX_CONF.format(dir=workdir, name=name, server=server))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen([binary, "-p", str(workdir), "-c", str(path), "-g", "user root;"]
                            if os.geteuid() == 0 else [binary, "-p", str(workdir), "-c", str(path)])


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  wrk reported errors on port {port}: {(errors or socket_errors).group(0)}", flush=True)
    return {"rps": rps, "p50": p50, "p99": p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    ensure_tools()
    repo = Path(__file__).resolve().parent.parent
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        backend, nginx_port, lb_port = free_port(), free_port(), free_port()
        try:
            procs.append(nginx(BACKEND_SERVER.format(port=backend), workdir, "backend"))
            procs.append(nginx(PROXY_SERVER.format(port=nginx_port, backend=backend), workdir, "proxy"))
            env = dict(os.environ, LB_LISTEN=f"127.0.0.1:{lb_port}", LB_ADMIN_LISTEN="127.0.0.1:0",
                       LB_BACKENDS=f"127.0.0.1:{backend}", LB_LOG_LEVEL="warning")
            procs.append(subprocess.Popen([sys.executable, "-m", "lb"], cwd=repo, env=env))
            for port in (backend, nginx_port, lb_port):
                wait_port(port)
            for port in (nginx_port, lb_port):  # warm up both (connections, caches)
                wrk(port, 1)
            results: dict[str, list[dict[str, float]]] = {"nginx": [], "swarmscale": []}
            for i in range(args.rounds):
                for name, port in (("nginx", nginx_port), ("swarmscale", lb_port)):
                    r = wrk(port, args.duration)
                    results[name].append(r)
                    print(f"round {i + 1} {name:<10} {r['rps']:>9.0f} req/s  p50 {r['p50']:.2f} ms  "
                          f"p99 {r['p99']:.2f} ms", flush=True)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    best = {name: max(rs, key=lambda r: r["rps"]) for name, rs in results.items()}
    n, s = best["nginx"], best["swarmscale"]
    print(f"\nwrk -t1 -c32, {args.duration:g}s x {args.rounds} rounds, best round of each:")
    print(f"{'':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in (("nginx", n), ("swarmscale", s)):
        print(f"{name:<12}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}")
    print(f"throughput ratio swarmscale/nginx: {s['rps'] / n['rps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
