"""Real servers on loopback: aiohttp backends started by the tests, the Balancer in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from lb.config import Config, HostPort
from lb.server import Balancer

LOCAL = "127.0.0.1"


@dataclass
class Backend:
    address: str
    port: int
    runner: web.AppRunner
    seen: list[web.Request] = field(default_factory=list)   # every request, in arrival order


def default_handler() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response({"path": request.path_qs, "method": request.method, "body_len": len(body)})
    return handle


@pytest.fixture
async def backend_factory() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Callable | None = None, app: web.Application | None = None) -> Backend:
        handler = handler or default_handler()
        seen: list[web.Request] = []
        if app is None:
            async def record(request: web.Request) -> web.StreamResponse:
                seen.append(request)
                return await handler(request)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOCAL, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runners.append(runner)
        return Backend(f"{LOCAL}:{port}", port, runner, seen)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def balancer_factory() -> AsyncIterator[Callable[..., Awaitable[Balancer]]]:
    started: list[Balancer] = []

    async def start(addresses: list[str], **overrides: object) -> Balancer:
        config = Config.from_env(
            {"LB_DOCKER_HOST": "unix:///nonexistent"}, listen=HostPort(LOCAL, 0), admin_listen=HostPort(LOCAL, 0),
            backends=tuple(HostPort(LOCAL, int(a.rpartition(":")[2])) for a in addresses), **overrides)
        balancer = Balancer(config)
        await balancer.start()
        started.append(balancer)
        return balancer

    yield start
    for balancer in started:
        await balancer.shutdown()


def unused_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    import socket
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]        # lower-cased names; repeated ones joined with ", "
    body: bytes
    raw_head: bytes


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> RawResponse:
    """Read one HTTP/1.1 response the way a client must: by Content-Length, chunks, or close."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if head_request or status in (204, 304) or 100 <= status < 200:
        return RawResponse(status, headers, b"", raw)
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
    return RawResponse(status, headers, body, raw)


async def open_client(balancer: Balancer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOCAL, balancer.proxy_port)
