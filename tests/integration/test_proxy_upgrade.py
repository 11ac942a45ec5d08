"""Upgrade: a WebSocket is tunnelled both ways once the backend answers 101."""

from __future__ import annotations

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
