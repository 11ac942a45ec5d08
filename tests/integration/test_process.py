"""`python -m lb` as a process: exit 2 on bad config, graceful drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.conftest import LOCAL, unused_port

REPO = Path(__file__).resolve().parents[2]


async def run_lb(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lb", cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_bad_variable_exits_2_with_one_line():
    proc = await run_lb({"LB_UPSTREAM_TIMEOUT": "soon"})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("LB_UPSTREAM_TIMEOUT=") and "Traceback" not in lines[0]


async def test_sigterm_drains_in_flight_requests_then_exits_0(backend_factory):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    backend = await backend_factory(handle)
    port, admin = unused_port(), unused_port()
    proc = await run_lb({"LB_LISTEN": f"{LOCAL}:{port}", "LB_ADMIN_LISTEN": f"{LOCAL}:{admin}",
                         "LB_BACKENDS": backend.address, "LB_DRAIN_TIMEOUT": "20"})
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)   # the "listening" log line
        assert b'"msg": "listening"' in line
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(session.get(f"http://{LOCAL}:{port}/slow"))
            await arrived.wait()
            proc.send_signal(signal.SIGTERM)
            for _ in range(200):           # bounded: each turn awaits one real health check
                async with session.get(f"http://{LOCAL}:{admin}/healthz") as r:
                    if r.status == 503:
                        break
            assert r.status == 503
            release.set()
            response = await slow
            assert response.status == 200 and await response.text() == "finished"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_drain_timeout_bounds_the_shutdown(backend_factory):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="too late")

    backend = await backend_factory(handle)
    port, admin = unused_port(), unused_port()
    proc = await run_lb({"LB_LISTEN": f"{LOCAL}:{port}", "LB_ADMIN_LISTEN": f"{LOCAL}:{admin}",
                         "LB_BACKENDS": backend.address, "LB_DRAIN_TIMEOUT": "0.3"})
    try:
        await asyncio.wait_for(proc.stderr.readline(), 30)
        reader, writer = await asyncio.open_connection(LOCAL, port)
        writer.write(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        await arrived.wait()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        try:
            rest = await reader.read()
        except ConnectionResetError:
            rest = b""
        assert rest == b""                    # the stuck request was cut off, not answered
        writer.close()
    finally:
        release.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
