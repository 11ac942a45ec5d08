"""The HTTP/1.1 data path as a client and a backend see it."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
from aiohttp import web

from tests.integration.conftest import LOCAL, open_client, read_response


async def test_keep_alive_reuses_client_and_backend_connections(backend_factory, balancer_factory):
    ports = []

    async def handle(request: web.Request) -> web.Response:
        ports.append(request.transport.get_extra_info("peername")[1])
        return web.Response(text=request.path)

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    for i in range(3):
        writer.write(f"GET /r{i} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
        response = await read_response(reader)
        assert (response.status, response.body) == (200, f"/r{i}".encode())
        assert "connection" not in response.headers
    writer.close()
    assert len(set(ports)) == 1, "the backend saw one pooled connection"


async def test_pipelined_requests_are_answered_in_order(backend_factory, balancer_factory):
    async def handle(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.05)   # the first answer is the slowest: order must still hold
        return web.Response(text=request.path)

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in ("/slow", "/b", "/c")))
    bodies = [(await read_response(reader)).body for _ in range(3)]
    assert bodies == [b"/slow", b"/b", b"/c"]
    writer.close()


async def test_large_bodies_stream_both_ways_intact(backend_factory, balancer_factory):
    size = 48 * 1024 * 1024
    block = bytes(range(256)) * 4096   # 1 MiB

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            digest, n = hashlib.sha256(), 0
            async for chunk in request.content.iter_chunked(1 << 16):
                digest.update(chunk)
                n += len(chunk)
            return web.json_response({"n": n, "sha": digest.hexdigest()})
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for _ in range(size // len(block)):
            await response.write(block)
        return response

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])

    async def upload():
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{LOCAL}:{lb.proxy_port}/up", data=upload()) as r:
            assert await r.json() == {"n": size, "sha": expected}      # chunked upload, re-chunked
        async with session.post(f"http://{LOCAL}:{lb.proxy_port}/up", data=block * 8) as r:
            assert (await r.json())["n"] == 8 * len(block)             # Content-Length upload
        async with session.get(f"http://{LOCAL}:{lb.proxy_port}/down") as r:
            digest, n = hashlib.sha256(), 0
            async for chunk in r.content.iter_chunked(1 << 16):
                digest.update(chunk)
                n += len(chunk)
        assert (n, digest.hexdigest()) == (size, expected)


async def test_a_client_that_stops_reading_stops_the_backend(backend_factory, balancer_factory):
    """Backpressure: the proxy does not soak up a response its client is not reading."""
    written = [0]
    progress = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(4096):          # 256 MiB if nothing pushed back
            await response.write(chunk)
            written[0] += len(chunk)
            progress.set()
        return response

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    for _ in range(400):               # until the backend's writes stall
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
    assert written[0] < 32 * 1024 * 1024, f"proxy buffered {written[0]} bytes for a client that read none"
    writer.close()


async def test_chunked_response_and_close_delimited_response(backend_factory, balancer_factory):
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
        return response

    backend = await backend_factory(handle)

    async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(legacy, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await read_response(reader)
    assert response.headers["transfer-encoding"] == "chunked" and response.body == b"one two three"

    lb2 = await balancer_factory([f"{LOCAL}:{port}"])
    reader, writer = await open_client(lb2)
    writer.write(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\nGET /old HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(2):   # re-chunked for the HTTP/1.1 client, whose connection stays open
        response = await read_response(reader)
        assert response.body == b"until close"
    writer.close()
    server.close()


async def test_head_204_304_have_no_body_and_keep_the_connection(backend_factory, balancer_factory):
    async def handle(request: web.Request) -> web.Response:
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"0123456789")

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await read_response(reader, head_request=True)
    assert head.status == 200 and head.headers["content-length"] == "10"
    for path, status in (("/204", 204), ("/304", 304), ("/after", 200)):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = await read_response(reader)
        assert response.status == status
    assert response.body == b"0123456789"   # nothing stray was left on the connection
    writer.close()


async def test_expect_100_continue(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    response = await read_response(reader)
    assert response.status == 200 and b'"body_len": 5' in response.body
    writer.close()


async def test_hop_by_hop_headers_removed_and_forwarded_headers_set(backend_factory, balancer_factory):
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Connection": "X-Backend-Hop", "X-Backend-Hop": "1",
                                                "Keep-Alive": "timeout=5", "X-End": "kept"})

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"GET /h HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Client-Hop\r\n"
                 b"X-Client-Hop: secret\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Connection: x\r\n"
                 b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-End: kept\r\n\r\n")
    response = await read_response(reader)
    seen = backend.seen[-1].headers
    for name in ("X-Client-Hop", "Keep-Alive", "TE", "Proxy-Connection"):
        assert name not in seen, name
    assert seen["X-End"] == "kept"
    assert seen["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "site.test"
    assert seen["Host"] == "site.test"
    assert "x-backend-hop" not in response.headers and "keep-alive" not in response.headers
    assert response.headers["x-end"] == "kept" and response.body == b"ok"
    writer.close()


async def test_http10_client_gets_a_closing_response(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address])
    reader, writer = await open_client(lb)
    writer.write(b"GET /old HTTP/1.0\r\n\r\n")
    response = await read_response(reader)
    assert response.status == 200 and b"/old" in response.body
    assert await reader.read() == b""   # and the connection ends
    writer.close()


async def test_interim_responses_and_heads_split_across_reads(balancer_factory):
    """A raw backend: a 103 before the answer, and the answer's head in pieces, all kept alive."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            path = head.split(b" ")[1]
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
            for piece in (b"HTTP/1.1 200 OK\r\nCont", b"ent-Length: %d\r\nConnection: keep-alive\r\n" % len(path),
                          b"X-Path: yes\r\n\r", b"\n", path):
                writer.write(piece)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    lb = await balancer_factory([f"{LOCAL}:{port}"])
    reader, writer = await open_client(lb)
    for path in (b"/one", b"/two-two"):
        writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        response = await read_response(reader)
        assert (response.status, response.body, response.headers["x-path"]) == (200, path, "yes")
        assert "connection" not in response.headers
    writer.close()
    server.close()


async def test_idle_keep_alive_connections_are_closed(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], idle_timeout=0.2)
    reader, writer = await open_client(lb)
    writer.write(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).status == 200
    assert await asyncio.wait_for(reader.read(), 10) == b""   # the balancer hangs up on an idle client
    writer.close()


async def test_idle_backend_connections_are_closed_before_the_backend_would(backend_factory, balancer_factory):
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        assert await reader.read() == b""      # the balancer, not us, ends the idle connection
        closed.set()
        writer.close()

    server = await asyncio.start_server(serve, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    lb = await balancer_factory([f"{LOCAL}:{port}"], idle_timeout=1)   # sweeps every 0.1 s
    lb.proxy.upstream_idle_s = 0.2                 # instead of 4 s, to keep the test short
    reader, writer = await open_client(lb)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).body == b"ok"
    await asyncio.wait_for(closed.wait(), 15)
    writer.close()
    server.close()
