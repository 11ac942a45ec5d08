"""Hostile clients and broken backends (issue 10): one small misbehaving peer per behaviour.

Each test asserts what a client and a backend observe: the answer, the bytes, whether a
connection was closed or reused, whether a healthy backend was blamed, and that memory and
descriptors stay bounded.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from tests.integration.conftest import LOCAL, open_client, read_response

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A raw TCP backend: `serve` runs per connection; heads and connections are recorded."""

    def __init__(self, serve: Handler) -> None:
        self.serve = serve
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self) -> RawBackend:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, LOCAL, 0)
        self.address = f"{LOCAL}:{self.server.sockets[0].getsockname()[1]}"
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def answering(*responses: bytes, keep: bool = True) -> Handler:
    """Per request on a connection, the next of `responses` as raw bytes (the last repeats)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(responses[min(i, len(responses) - 1)])
            await writer.drain()
            i += 1
            if not keep:
                return
    return serve


def first_then(raw: bytes, fresh: bytes) -> Handler:
    """The first connection answers `raw`, every later one `fresh`."""
    count = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        await answering(raw if count[0] == 1 else fresh)(reader, writer)
    return serve


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def ask(lb, data: bytes, head_request: bool = False):
    reader, writer = await open_client(lb)
    writer.write(data)
    try:
        return await asyncio.wait_for(read_response(reader, head_request), 10)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 10) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionError:
        pass
    return True


# --- requests nginx refuses -------------------------------------------------------------------

async def test_requests_nginx_refuses_never_reach_the_backend(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address])
    cases = [
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),                  # duplicate Host
        (b"GET / HTTP/1.1\r\n\r\n", 400),                                        # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),                           # invalid Host
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400),            # 1.0 with TE
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\n\r\n", 400),
        (b"GET /\r\n", 400),                                                     # HTTP/0.9's request line
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ]
    for data, status in cases:
        reader, writer = await open_client(lb)
        writer.write(data)
        response = await asyncio.wait_for(read_response(reader), 10)
        assert response.status == status, data
        assert response.headers["connection"] == "close"
        assert await closed_by_peer(reader)
        writer.close()
    assert backend.seen == []
    # HTTP/1.0 without Host is fine (the backend's address is used).
    assert (await ask(lb, b"GET /old HTTP/1.0\r\n\r\n")).status == 200


async def test_proxy_and_underscore_headers_are_never_forwarded(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address])
    response = await ask(lb, b"GET / HTTP/1.1\r\nHost: x\r\nProxy: http://evil:1\r\nX_Forwarded_For: 6.6.6.6\r\n"
                             b"X-Real_IP: 6.6.6.6\r\nX-Kept: yes\r\n\r\n")
    assert response.status == 200
    seen = backend.seen[-1].headers
    assert "Proxy" not in seen and "X_Forwarded_For" not in seen and "X-Real_IP" not in seen
    assert seen["X-Kept"] == "yes" and seen["X-Forwarded-For"] == LOCAL


# --- bounded memory per connection ------------------------------------------------------------

async def test_trailers_are_bounded_and_never_reach_the_next_request(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], max_header_bytes=4096)
    reader, writer = await open_client(lb)
    # Small trailers: dropped, and the next request on the connection has none of them.
    writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                 b"X-Trailer: t\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = await read_response(reader), await read_response(reader)
    assert (first.status, second.status) == (200, 200) and b'"body_len": 3' in first.body
    assert "X-Trailer" not in backend.seen[-1].headers

    # Endless trailers: many fields, then one field that never ends. 431, memory bounded.
    before = rss_mb()
    for trailer in (b"T: " + b"v" * 100 + b"\r\n", b"T: " + b"v" * 65536):
        reader, writer = await open_client(lb)
        writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n")
        status = None
        for _ in range(2000):                      # up to ~60 MB if nothing stops it
            try:
                writer.write(trailer * (512 if len(trailer) < 1000 else 1))
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof() or len(reader._buffer):   # an answer arrived
                break
            await asyncio.sleep(0)
        try:
            status = (await asyncio.wait_for(read_response(reader), 10)).status
        except (ConnectionError, asyncio.IncompleteReadError):
            status = None
        assert status in (431, None)
        writer.close()
    assert rss_mb() - before < 40
    assert (await ask(lb, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200


async def test_a_long_chunked_body_in_small_reads_is_not_mistaken_for_trailers(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], max_header_bytes=1024)
    reader, writer = await open_client(lb)
    writer.write(b"POST /many HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nbb8\r\n")
    for _ in range(299):   # each read ends with the next chunk's size line, like trailers would
        writer.write(b"c" * 3000 + b"\r\nbb8\r\n")
        await writer.drain()
        await asyncio.sleep(0.001)
    writer.write(b"c" * 3000 + b"\r\n0\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 10)
    assert response.status == 200 and b'"body_len": 900000' in response.body
    writer.close()


async def test_a_pipelined_head_in_the_same_read_as_a_body_is_still_limited(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], max_header_bytes=4096)
    big = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
    reader, writer = await open_client(lb)
    # The body's end and most of an oversized head in one read; the head's small end in the next.
    writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + big)
    await asyncio.sleep(0.1)
    writer.write(b"\r\n\r\n")
    first = await read_response(reader)
    second = await read_response(reader)
    assert (first.status, second.status) == (200, 431)
    assert [r.path for r in backend.seen] == ["/p"]
    writer.close()


async def test_a_huge_response_head_is_a_502_and_stalls_no_one(balancer_factory, backend_factory):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2000):                       # 100 MB of header if nobody stops reading it
            writer.write(b"X-Junk: " + b"j" * 50000 + b"\r\n")
            await writer.drain()

    bad = await RawBackend(serve).start()
    good = await backend_factory()
    lb = await balancer_factory([bad.address], eject_after=100)
    lb_good = await balancer_factory([good.address])
    pending = asyncio.create_task(ask(lb, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    before = rss_mb()
    for _ in range(5):   # another client keeps being served meanwhile
        assert (await ask(lb_good, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
    assert (await pending).status == 502
    assert rss_mb() - before < 40
    bad.close()


# --- never reuse what the backend broke -------------------------------------------------------

async def test_bytes_past_the_framed_end_are_dropped_with_the_connection(balancer_factory):
    cases = [
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA-BYTES", 200, b"ok"),
        (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204, b""),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\n\r\nbody!", 304, b""),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b""),
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
         200, b"ok"),
    ]
    fresh = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
    for method, raw, status, body in cases:
        backend = await RawBackend(first_then(raw, fresh)).start()
        lb = await balancer_factory([backend.address], eject_after=100)
        reader, writer = await open_client(lb)
        writer.write(method + b" /one HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(read_response(reader, method == b"HEAD"), 10)
        assert (response.status, response.body) == (status, body), raw
        if status == 204:
            assert "content-length" not in response.headers
        writer.write(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")   # the same client connection goes on
        nxt = await asyncio.wait_for(read_response(reader), 10)
        assert (nxt.status, nxt.body) == (200, b"fresh"), raw
        assert backend.connections == 2, "the broken connection was not reused"
        writer.close()
        backend.close()


async def test_bad_framing_and_unasked_switches_are_502(balancer_factory):
    for raw in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\ntunnel!"):
        backend = await RawBackend(answering(raw)).start()
        lb = await balancer_factory([backend.address], eject_after=100)
        response = await ask(lb, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.status == 502, raw
        assert b"tunnel" not in response.body
        backend.close()


async def test_an_upgrade_with_a_body_is_forwarded_as_a_plain_request(backend_factory, balancer_factory):
    """What `curl --http2 -d x http://...` sends: the backend gets the body and answers; nobody is ejected."""
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], upstream_timeout=2)
    for _ in range(12):
        reader, writer = await open_client(lb)
        writer.write(b"POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 1\r\n\r\nx")
        response = await asyncio.wait_for(read_response(reader), 5)
        assert response.status == 200 and b'"body_len": 1' in response.body
        writer.close()
    seen = backend.seen[-1].headers
    assert "Upgrade" not in seen and "HTTP2-Settings" not in seen
    # Chunked, and followed by a pipelined request on the same connection.
    reader, writer = await open_client(lb)
    writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(read_response(reader), 5)
    assert first.status == 200 and b'"body_len": 3' in first.body
    writer.close()
    assert lb.pool.backends[0].errors == 0 and lb.pool.ejections_total == 0


# --- time limits once a request is under way --------------------------------------------------

async def test_a_body_that_stops_coming_gets_408_and_blames_no_backend(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], body_timeout=0.3, eject_after=1)
    reader, writer = await open_client(lb)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a little")
    response = await asyncio.wait_for(read_response(reader), 10)
    assert response.status == 408
    assert await closed_by_peer(reader)
    writer.close()
    state = lb.pool.backends[0]
    assert state.errors == 0 and state.consecutive_failures == 0 and state.state == "active"
    assert state.inflight == 0


async def test_a_backend_silent_mid_body_is_cut_after_the_read_timeout(balancer_factory):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        await writer.drain()
        await asyncio.sleep(30)

    backend = await RawBackend(serve).start()
    lb = await balancer_factory([backend.address], read_timeout=0.3, eject_after=100)
    reader, writer = await open_client(lb)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    rest = await asyncio.wait_for(reader.read(), 10)   # the proxy cuts the client: the body is short
    assert rest == b"half"
    assert lb.pool.backends[0].errors == 1 and lb.pool.backends[0].inflight == 0
    writer.close()
    backend.close()


async def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(backend_factory, balancer_factory):
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(4096):
                await response.write(b"x" * 65536)
        except ConnectionError:
            pass
        return response

    backend = await backend_factory(handle)
    lb = await balancer_factory([backend.address], send_timeout=0.3, eject_after=1)
    reader, writer = await open_client(lb)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    for _ in range(100):
        await asyncio.sleep(0.1)
        if not lb.proxy.connections:
            break
    assert not lb.proxy.connections, "the proxy let go of the client that stopped reading"
    state = lb.pool.backends[0]
    assert state.errors == 0 and state.inflight == 0 and state.state == "active"
    writer.close()


async def test_slowloris_is_closed_at_the_idle_timeout(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], idle_timeout=0.5)
    reader, writer = await open_client(lb)
    closed = False
    for _ in range(60):   # a byte every 0.1 s: the head never ends
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.1)
        if reader.at_eof():
            closed = True
            break
    assert closed
    writer.close()


# --- the admin port ---------------------------------------------------------------------------

async def test_silent_admin_connections_are_closed_and_the_token_guards_status(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], admin_timeout=0.3, admin_token="s3cret")
    silent = [await asyncio.open_connection(LOCAL, lb.admin_port) for _ in range(20)]
    slow_reader, slow_writer = await asyncio.open_connection(LOCAL, lb.admin_port)
    for _ in range(10):   # a byte at a time: the head takes longer than the timeout
        slow_writer.write(b"G")
        await asyncio.sleep(0.06)
    for reader, _ in [*silent, (slow_reader, slow_writer)]:
        assert await asyncio.wait_for(closed_by_peer(reader), 10)
    for _, writer in silent:
        writer.close()
    slow_writer.close()
    base = f"http://{LOCAL}:{lb.admin_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200
        for path in ("/status", "/metrics"):
            async with session.get(base + path) as r:
                assert r.status == 401
            async with session.get(base + path, headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with session.get(base + path, headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
    assert lb.admin_guard is not None and len(lb.admin_guard.connections) <= 1


# --- no growth over many mixed requests -------------------------------------------------------

async def test_no_descriptor_or_memory_growth_over_mixed_good_and_bad_requests(balancer_factory):
    # A raw backend: the aiohttp one keeps every request it saw, which would be the growth measured.
    backend = await RawBackend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).start()
    lb = await balancer_factory([backend.address], max_header_bytes=4096)
    good = b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = [b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
           b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           b"\x00\x01garbage\r\n\r\n"]

    async def round_(n: int) -> None:
        for i in range(n):
            reader, writer = await open_client(lb)
            writer.write(good * 20 + bad[i % len(bad)])
            for _ in range(20):
                assert (await read_response(reader)).status == 200
            assert (await read_response(reader)).status in (400, 431)
            writer.close()

    await round_(50)          # warm up
    fd0, rss0 = fds(), rss_mb()
    await round_(int(os.environ.get("HOSTILE_ROUNDS", "400")))   # 21 requests each; 2400 for the 50,000 bar
    await asyncio.sleep(0.2)
    print(f"descriptors {fd0} -> {fds()}, RSS {rss0:.1f} -> {rss_mb():.1f} MiB")
    assert fds() <= fd0 + 5
    assert rss_mb() - rss0 < 20
    backend.close()
