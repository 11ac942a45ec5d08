"""A 1 GiB upload and a 1 GiB download through `python -m lb`, with the balancer's peak memory.

The backend (aiohttp, in this process) hashes what it receives and streams what it sends; the
client checks sizes and digests. Backpressure is what keeps the balancer's peak RSS (VmHWM)
small whatever the body size. Run: .venv/bin/python bench/big_body.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

BLOCK = bytes(range(256)) * 4096   # 1 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(mib: int) -> int:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            digest, n = hashlib.sha256(), 0
            async for chunk in request.content.iter_chunked(1 << 16):
                digest.update(chunk)
                n += len(chunk)
            return web.json_response({"n": n, "sha": digest.hexdigest()})
        response = web.StreamResponse(headers={"Content-Length": str(mib * len(BLOCK))})
        await response.prepare(request)
        for _ in range(mib):
            await response.write(BLOCK)
        return response

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    backend_port, port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()
    env = dict(os.environ, LB_LISTEN=f"127.0.0.1:{port}", LB_ADMIN_LISTEN="127.0.0.1:0",
               LB_BACKENDS=f"127.0.0.1:{backend_port}", LB_LOG_LEVEL="warning")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lb", env=env,
                                                cwd=Path(__file__).resolve().parent.parent)
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        idle_rss = peak_rss_mib(proc.pid)
        expected = hashlib.sha256()
        for _ in range(mib):
            expected.update(BLOCK)

        async def upload():
            for _ in range(mib):
                yield BLOCK

        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            t = time.monotonic()
            async with session.post(f"http://127.0.0.1:{port}/up", data=upload()) as r:
                result = await r.json()
            up_s = time.monotonic() - t
            assert result == {"n": mib * len(BLOCK), "sha": expected.hexdigest()}, result
            t = time.monotonic()
            digest, n = hashlib.sha256(), 0
            async with session.get(f"http://127.0.0.1:{port}/down") as r:
                async for chunk in r.content.iter_chunked(1 << 16):
                    digest.update(chunk)
                    n += len(chunk)
            down_s = time.monotonic() - t
            assert (n, digest.hexdigest()) == (mib * len(BLOCK), expected.hexdigest())
        peak = peak_rss_mib(proc.pid)
        print(f"{mib} MiB up in {up_s:.1f} s ({mib / up_s:.0f} MiB/s), down in {down_s:.1f} s "
              f"({mib / down_s:.0f} MiB/s), bodies intact")
        print(f"balancer RSS: {idle_rss:.0f} MiB at start, peak {peak:.0f} MiB")
    finally:
        proc.terminate()
        await proc.wait()
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    sys.exit(asyncio.run(main(parser.parse_args().mib)))
