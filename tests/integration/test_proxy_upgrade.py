"""Upgrade: a WebSocket is tunnelled both ways once the backend answers 101."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import WSMsgType, web

from tests.integration.conftest import LOCAL


async def test_websocket_echo_through_the_proxy(backend_factory, balancer_factory):
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    backend = await backend_factory(app=app)
    lb = await balancer_factory([backend.address])
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://{LOCAL}:{lb.proxy_port}/ws") as ws:
            for i in range(3):
                await ws.send_str(f"m{i}")
                assert (await ws.receive()).data == f"echo:m{i}"
            big = bytes(range(256)) * 4096
            await ws.send_bytes(big)
            assert (await ws.receive()).data == big[::-1]
        # A plain request on the same balancer still works after the tunnel closed.
        async with session.get(f"http://{LOCAL}:{lb.proxy_port}/nothing") as r:
            assert r.status == 404


async def test_a_silent_websocket_is_closed_at_the_tunnel_timeout_and_a_talking_one_is_not(
        backend_factory, balancer_factory):
    """LB_TUNNEL_TIMEOUT: no byte either way for that long closes both sides; traffic keeps it open."""
    closed_at_backend: list[float] = []

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)   # no pings: silence is really silence
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        closed_at_backend.append(time.monotonic())
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    backend = await backend_factory(app=app)
    lb = await balancer_factory([backend.address], tunnel_timeout=0.6)
    url = f"http://{LOCAL}:{lb.proxy_port}/ws"
    async with aiohttp.ClientSession() as session:
        talking = await session.ws_connect(url, autoping=False)
        silent = await session.ws_connect(url, autoping=False)
        opened = time.monotonic()
        # The talking one sends every 0.2 s for 1.5 s: well past the timeout, never silent that long.
        for i in range(8):
            await talking.send_str(f"t{i}")
            assert (await talking.receive(timeout=1)).data == f"t{i}"
            await asyncio.sleep(0.2)
        # The silent one was closed by the balancer: its client sees the end, and so did its backend.
        message = await silent.receive(timeout=1)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
        assert closed_at_backend and 0.5 <= closed_at_backend[0] - opened <= 1.5
        assert not talking.closed
        await talking.send_str("still")
        assert (await talking.receive(timeout=1)).data == "still"
        await talking.close()
        await silent.close()
    assert lb.proxy.tunnels_timed_out == 1
