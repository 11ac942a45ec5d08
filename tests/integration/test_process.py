"""`python -m lb` as a process: exit 2 on bad config, graceful drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

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


@asynccontextmanager
async def lb_before_held_backend(backend_factory, reply: str,
                                 drain_timeout: str) -> AsyncIterator[SimpleNamespace]:
    """`python -m lb` (proc, port, admin) in front of a backend holding requests (arrived) until release."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text=reply)

    backend = await backend_factory(handle)
    port, admin = unused_port(), unused_port()
    proc = await run_lb({"LB_LISTEN": f"{LOCAL}:{port}", "LB_ADMIN_LISTEN": f"{LOCAL}:{admin}",
                         "LB_BACKENDS": backend.address, "LB_DRAIN_TIMEOUT": drain_timeout})
    try:
        yield SimpleNamespace(proc=proc, port=port, admin=admin, arrived=arrived, release=release)
    finally:
        release.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_drains_in_flight_requests_then_exits_0(backend_factory):
    async with lb_before_held_backend(backend_factory, "finished", drain_timeout="20") as lb:
        line = await asyncio.wait_for(lb.proc.stderr.readline(), 30)   # the "listening" log line
        assert b'"msg": "listening"' in line
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(session.get(f"http://{LOCAL}:{lb.port}/slow"))
            await lb.arrived.wait()
            lb.proc.send_signal(signal.SIGTERM)
            for _ in range(200):           # bounded: each turn awaits one real health check
                async with session.get(f"http://{LOCAL}:{lb.admin}/healthz") as r:
                    if r.status == 503:
                        break
            assert r.status == 503
            lb.release.set()
            response = await slow
            assert response.status == 200 and await response.text() == "finished"
        assert await asyncio.wait_for(lb.proc.wait(), 30) == 0


async def test_drain_timeout_bounds_the_shutdown(backend_factory):
    async with lb_before_held_backend(backend_factory, "too late", drain_timeout="0.3") as lb:
        await asyncio.wait_for(lb.proc.stderr.readline(), 30)
        reader, writer = await asyncio.open_connection(LOCAL, lb.port)
        writer.write(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        await lb.arrived.wait()
        lb.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(lb.proc.wait(), 30) == 0
        try:
            rest = await reader.read()
        except ConnectionResetError:
            rest = b""
        assert rest == b""                    # the stuck request was cut off, not answered
        writer.close()


async def test_a_taken_port_or_a_non_policy_exits_2_with_one_line():
    import socket
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        for env, variable in (({"LB_LISTEN": f"{LOCAL}:{port}", "LB_ADMIN_LISTEN": f"{LOCAL}:0"}, "LB_LISTEN="),
                              ({"LB_LISTEN": f"{LOCAL}:0", "LB_ADMIN_LISTEN": f"{LOCAL}:{port}"}, "LB_ADMIN_LISTEN="),
                              ({"LB_POLICY": "json:dumps"}, "LB_POLICY="),
                              ({"LB_BACKENDS": ",,,"}, "LB_BACKENDS="),
                              ({"LB_LISTEN": ""}, "LB_LISTEN=")):
            proc = await run_lb(env)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            lines = err.decode().strip().splitlines()
            assert proc.returncode == 2, (env, err)
            assert len(lines) == 1 and lines[0].startswith(variable) and "Traceback" not in err.decode(), lines
