"""A seeded fuzz of the request path (issue 10): mutated heads, bodies and chunk framings, sent in
random pieces, through the real proxy on loopback to a backend that parses strictly.

Invariants, for every case: each answer is a well-formed response with a status the proxy may
give, one per request at most, or the connection closes; a 200 carries a target the client sent;
the backend never parses a request the proxy did not forward as one (llhttp on both sides: no
parse error there, never more requests than the proxy counted); memory and descriptors stay
bounded; the next client is served. A seeded random corpus, not hypothesis: no new dependency,
the same cases on every run, a few thousand of them in seconds.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from tests.integration.conftest import LOCAL, read_response

SEED = int(os.environ.get("FUZZ_SEED", "10"))
CASES = int(os.environ.get("FUZZ_CASES", "2000"))
CONCURRENCY = 100
ALLOWED = {200, 400, 405, 408, 431, 501, 502, 505}


class StrictBackend(asyncio.Protocol):
    """Answers every request it parses with 200 and the request's target as the body."""

    seen = 0
    errors: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = HttpRequestParser(self)
        self.url = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:      # a forwarded Upgrade, answered with 200: nothing may follow
            self.transport.close()
        except HttpParserError as exc:
            StrictBackend.errors.append(repr(exc).encode() + b": " + data[:200])
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        StrictBackend.seen += 1
        url, self.url = self.url, b""
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(url), url))


def requests(rng: random.Random, n: int) -> list[bytes]:
    """A few well-formed requests, each with its own target, to be mutated."""
    out = []
    for _ in range(n):
        target = b"/f%d" % rng.randrange(10**9)
        kind = rng.randrange(7)
        if kind == 0:
            out.append(b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n" % target)
        elif kind == 1:
            body = rng.randbytes(rng.randrange(0, 300))
            out.append(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (target, len(body), body))
        elif kind == 2:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in
                              (rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(0, 4))))
            trailer = b"X-T: 1\r\n" if rng.random() < 0.3 else b""
            out.append(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n%s\r\n"
                       % (target, chunks, trailer))
        elif kind == 3:
            out.append(b"DELETE %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % target)
        elif kind == 4:
            out.append(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % target)
        elif kind == 5:
            out.append(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n" % target)
        else:
            out.append(b"PUT %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok" % target)
    return out


INTERESTING = [b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"0", b"a", b"-", b",", b"_", b"\x7f", b"\xff", b";"]
HEADER_LINES = [b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Content-Length: -1\r\n",
                b"Content-Length: 1, 2\r\n", b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
                b"Transfer-Encoding: chunked, identity\r\n", b"Transfer-Encoding:\x0bchunked\r\n",
                b" folded: x\r\n", b"Host: y\r\n", b"X: y\nBare: lf\r\n", b"Connection: close\r\n",
                b"Connection: upgrade\r\n", b"Upgrade: websocket\r\n", b"Proxy: http://x\r\n",
                b"X_Forwarded_For: 1.2.3.4\r\n", b"Expect: 100-continue\r\n", b"Trailer: X\r\n",
                b"Content-Length: 99999999999999999999\r\n", b"X-Long: " + b"l" * 5000 + b"\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(0, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(INTERESTING)[0]
        elif op == 1:
            line_end = buf.find(b"\r\n", pos)
            if line_end >= 0:
                buf[line_end + 2:line_end + 2] = rng.choice(HEADER_LINES)
        elif op == 2 and buf:
            del buf[pos:pos + rng.randrange(1, 8)]
        elif op == 3:
            buf[pos:pos] = buf[pos:pos + rng.randrange(1, 40)]
        elif op == 4:
            buf[pos:pos] = b"%x\r\n" % rng.choice([0, 1, 0xFFFFFFFFFFFF, 7])
        elif op == 5:
            buf = bytearray(bytes(buf).replace(b"\r\n", b"\n", rng.randrange(1, 3)))
        else:
            buf[pos:pos] = rng.choice(INTERESTING)
    return bytes(buf)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 4)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if data[a:b]]


async def run_case(port: int, rng: random.Random) -> None:
    sent = requests(rng, rng.randrange(1, 4))
    data = b"".join(sent)
    if rng.random() < 0.9:
        data = mutate(rng, data)
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        for piece in pieces(rng, data):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        answers = 0
        while True:
            try:
                response = await asyncio.wait_for(read_response(reader), 5)
            except (asyncio.IncompleteReadError, ConnectionError):
                break   # closed by the proxy: allowed after any number of answers
            if response.status == 100:   # interim: the final answer follows
                continue
            answers += 1
            assert response.status in ALLOWED, (response.status, data)
            assert answers <= len(sent) + 1, ("more answers than requests", data)   # +1: one error answer
            if response.status == 200 and response.body:
                assert response.body in data, (response.body, data)
            if response.headers.get("connection") == "close":
                assert await reader.read() == b""
                break
    except ConnectionError:
        pass
    finally:
        writer.close()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def test_fuzzed_requests_keep_the_invariants(balancer_factory):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StrictBackend, LOCAL, 0)
    StrictBackend.seen, StrictBackend.errors = 0, []
    address = f"{LOCAL}:{server.sockets[0].getsockname()[1]}"
    # Short timeouts: a case left incomplete on purpose is closed by the proxy, not waited for.
    lb = await balancer_factory([address], idle_timeout=0.3, body_timeout=0.3, upstream_timeout=1,
                                max_header_bytes=4096, eject_after=1000)
    lb.proxy.upstream_idle_s = 0.3   # pooled connections go soon, so the descriptor count can settle
    rng = random.Random(SEED)
    fd0, rss0 = len(os.listdir("/proc/self/fd")), rss_mb()
    running = asyncio.Semaphore(CONCURRENCY)

    async def one(seed: int) -> None:
        async with running:
            await run_case(lb.proxy_port, random.Random(seed))

    await asyncio.gather(*(one(rng.randrange(2**32)) for _ in range(CASES)))
    assert StrictBackend.errors == [], StrictBackend.errors[:3]
    forwarded = sum(b.requests_total() for b in lb.pool.backends)
    assert 0 < StrictBackend.seen <= forwarded, (StrictBackend.seen, forwarded)
    # The next client is served; nothing is left open or grown.
    reader, writer = await asyncio.open_connection(LOCAL, lb.proxy_port)
    writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    assert (response.status, response.body) == (200, b"/next")
    writer.close()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if not lb.proxy.connections:
            break
    assert not lb.proxy.connections
    for _ in range(50):
        await asyncio.sleep(0.1)
        if len(os.listdir("/proc/self/fd")) <= fd0 + 10:
            break
    assert len(os.listdir("/proc/self/fd")) <= fd0 + 10
    assert rss_mb() - rss0 < 50
    server.close()
