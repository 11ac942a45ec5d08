"""Failures: retries, 502/503/504, ejection, and bad requests that must not hurt anyone else."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

from tests.integration.conftest import LOCAL, open_client, read_response, unused_port


async def status(lb) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{LOCAL}:{lb.admin_port}/status") as r:
            return await r.json()


async def test_refused_connection_is_retried_elsewhere_whatever_the_method(backend_factory, balancer_factory):
    good = await backend_factory()
    dead = f"{LOCAL}:{unused_port()}"
    lb = await balancer_factory([dead, good.address], eject_after=100)
    async def post(session: aiohttp.ClientSession, i: int) -> tuple[int, int]:
        async with session.post(f"http://{LOCAL}:{lb.proxy_port}/p{i}", data=b"body") as r:
            return r.status, (await r.json())["body_len"]

    async with aiohttp.ClientSession() as session:   # concurrent: the busy good one makes the dead one look cheap
        results = await asyncio.gather(*(post(session, i) for i in range(12)))
    assert results == [(200, 4)] * 12
    assert len(good.seen) == 12
    dead_backend = lb.pool.get(dead)
    assert dead_backend is not None and dead_backend.errors > 0


def dropping_handler():
    """A backend that reads the request and drops the connection without answering."""
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        request.transport.abort()
        return web.Response(text="never sent")
    return handle


async def test_request_lost_after_send_retries_idempotent_and_502s_the_rest(backend_factory, balancer_factory):
    bad = await backend_factory(dropping_handler())
    good = await backend_factory()
    lb = await balancer_factory([bad.address, good.address], eject_after=1000, retry_budget=1.0)

    async def get(session: aiohttp.ClientSession, i: int) -> int:
        async with session.get(f"http://{LOCAL}:{lb.proxy_port}/g{i}") as r:
            return r.status

    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(50):   # concurrent batches until the bad backend has had a few
            statuses += await asyncio.gather(*(get(session, i) for i in range(8)))
            if len(bad.seen) >= 3:
                break
    assert len(bad.seen) >= 3
    assert set(statuses) == {200}, "idempotent requests are retried on the good backend"
    assert lb.pool.retries_total >= 3

    only_bad = await balancer_factory([bad.address])
    seen_before = len(bad.seen)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{LOCAL}:{only_bad.proxy_port}/p", data=b"x") as r:
            assert r.status == 502
    assert len(bad.seen) == seen_before + 1, "a POST that may have reached a backend is not replayed"


async def test_a_retry_that_runs_out_of_backends_gives_its_retry_slot_back(backend_factory, balancer_factory):
    bad = await backend_factory(dropping_handler())
    dead = [f"{LOCAL}:{unused_port()}" for _ in range(2)]
    lb = await balancer_factory([bad.address, *dead], eject_after=1000)
    async with aiohttp.ClientSession() as session:
        for i in range(10):   # each tries all three, in random order: a retry often ends on a refused connect
            async with session.get(f"http://{LOCAL}:{lb.proxy_port}/g{i}") as r:
                assert r.status == 502
    assert lb.pool.retries_total > 0 and lb.pool.active_retries == 0


async def test_slow_backend_gets_504(backend_factory, balancer_factory):
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    slow = await backend_factory(handle)
    lb = await balancer_factory([slow.address], upstream_timeout=0.2)
    reader, writer = await open_client(lb)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await read_response(reader)
    assert response.status == 504
    release.set()
    writer.close()


async def test_no_backend_is_503_with_retry_after(balancer_factory):
    lb = await balancer_factory([])
    reader, writer = await open_client(lb)
    for _ in range(2):   # and the client connection survives it
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await read_response(reader)
        assert response.status == 503 and response.headers["retry-after"] == "1"
    writer.close()


async def test_failing_backend_is_ejected_but_never_all(backend_factory, balancer_factory):
    good = await backend_factory()
    dead1, dead2 = f"{LOCAL}:{unused_port()}", f"{LOCAL}:{unused_port()}"
    lb = await balancer_factory([dead1, good.address], eject_after=2, eject_base=60)
    async def get(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://{LOCAL}:{lb.proxy_port}/") as r:
            return r.status

    async with aiohttp.ClientSession() as session:
        for _ in range(50):   # concurrent batches: some are bound to pick the dead one
            assert set(await asyncio.gather(*(get(session) for _ in range(8)))) == {200}
            if lb.pool.get(dead1).state == "ejected":
                break
    states = {b["address"]: b["state"] for b in (await status(lb))["backends"]}
    assert states == {dead1: "ejected", good.address: "active"}
    assert lb.pool.ejections_total == 1

    lb2 = await balancer_factory([dead1, dead2], eject_after=1, eject_base=60)
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.get(f"http://{LOCAL}:{lb2.proxy_port}/") as r:
                assert r.status == 502
    states = [b["state"] for b in (await status(lb2))["backends"]]
    assert states.count("ejected") == 1, "the last serving backend is never ejected"


async def test_malformed_and_oversized_requests_do_not_hurt_others(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address], max_header_bytes=4096)
    other_reader, other_writer = await open_client(lb)

    reader, writer = await open_client(lb)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\x01 garbage\r\n\r\n")
    first = await read_response(reader)
    bad = await read_response(reader)
    assert (first.status, bad.status) == (200, 400)
    assert await reader.read() == b""

    for head in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000):   # never ends
        reader, writer = await open_client(lb)
        writer.write(head)
        response = await read_response(reader)
        assert response.status == 431
        writer.close()

    other_writer.write(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await read_response(other_reader)
    assert response.status == 200 and b"/still" in response.body
    assert [r.path for r in backend.seen] == ["/", "/still"]
    other_writer.close()


async def test_garbage_from_a_backend_is_502_and_a_truncated_body_cuts_the_client(balancer_factory):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/garbage" in head:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    lb = await balancer_factory([f"{LOCAL}:{port}"], eject_after=100)
    reader, writer = await open_client(lb)
    writer.write(b"POST /garbage HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert (await read_response(reader)).status == 502

    writer.write(b"GET /truncated HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in head
    rest = await reader.read()            # the proxy closes: the client can tell the body is short
    assert rest == b"only part"
    writer.close()
    server.close()


async def test_removed_backend_drains_its_requests_and_gets_no_new_ones(backend_factory, balancer_factory):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="old")

    old = await backend_factory(held)
    new = await backend_factory()
    lb = await balancer_factory([old.address])
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(session.get(f"http://{LOCAL}:{lb.proxy_port}/held"))
        await arrived.wait()
        lb.pool.update([new.address])          # what discovery does when a task goes away
        states = {b["address"]: b["state"] for b in (await status(lb))["backends"]}
        assert states == {old.address: "draining", new.address: "slow_start"}
        for i in range(5):
            async with session.get(f"http://{LOCAL}:{lb.proxy_port}/n{i}") as r:
                assert r.status == 200
        assert len(old.seen) == 1 and len(new.seen) == 5
        release.set()
        response = await pending
        assert response.status == 200 and await response.text() == "old"
    assert [b["address"] for b in (await status(lb))["backends"]] == [new.address]


async def test_a_backend_dying_with_many_requests_in_flight_loses_none_of_them(backend_factory, balancer_factory):
    """A task killed under load resets every connection it holds at once. Each of those requests
    was sent and never answered, so each idempotent one must be retried elsewhere: half of the
    in-flight requests failing together is the loss of one backend of two, not a retry storm."""
    die = asyncio.Event()

    async def doomed(request: web.Request) -> web.StreamResponse:
        await die.wait()
        request.transport.abort()   # as the kernel does to a killed process's sockets
        return web.Response(text="never sent")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response({"path": request.path})

    dying = await backend_factory(doomed)
    others = [await backend_factory(slow)]
    lb = await balancer_factory([dying.address, *(b.address for b in others)], eject_after=1000)

    async def get(session: aiohttp.ClientSession, i: int) -> int:
        async with session.get(f"http://{LOCAL}:{lb.proxy_port}/g{i}") as r:
            await r.read()
            return r.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        requests = [asyncio.ensure_future(get(session, i)) for i in range(48)]
        for _ in range(200):
            if len(dying.seen) >= 16:
                break
            await asyncio.sleep(0.01)
        assert len(dying.seen) >= 16, "the picker spreads 48 requests over two backends"
        die.set()
        statuses = await asyncio.gather(*requests)
    assert Counter(statuses) == {200: 48}


async def _loop_gets(lb, clients: int, seconds: float) -> tuple[Counter, float, Counter]:
    """`clients` keep-alive clients sending GETs for `seconds`: statuses, the slowest answer, who answered."""
    statuses: Counter = Counter()
    answered: Counter = Counter()
    slowest = 0.0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal slowest
        while loop.time() < end:
            started = loop.time()
            async with session.get(f"http://{LOCAL}:{lb.proxy_port}/x") as r:
                body = await r.text()
                statuses[r.status] += 1
                answered[body] += 1
            slowest = max(slowest, loop.time() - started)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return statuses, slowest, answered


async def test_a_frozen_backend_s_requests_are_moved_to_the_others(backend_factory, balancer_factory):
    """A paused container keeps its connections open and answers nothing: without help its requests
    would wait for LB_UPSTREAM_TIMEOUT (60 s). Past LB_STALL_AFTER, while the others answer, they move."""
    frozen = asyncio.Event()
    thaw = asyncio.Event()

    def answering(name: str, freezes: bool):
        async def handle(request: web.Request) -> web.Response:
            if freezes and frozen.is_set():
                await thaw.wait()
            await asyncio.sleep(0.02)
            return web.Response(text=name)
        return handle

    backends = [await backend_factory(answering(f"b{i}", freezes=i == 0)) for i in range(3)]
    lb = await balancer_factory([b.address for b in backends], stall_after=0.5)
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, frozen.set)
    try:
        statuses, slowest, answered = await _loop_gets(lb, 24, 4.0)
    finally:
        thaw.set()
    assert statuses == {200: sum(statuses.values())} and statuses[200] > 500
    assert answered["b0"] > 0, "b0 served before it froze"
    # Moved after about 0.5 s; left on the frozen one, a request would wait for the client's 20 s.
    assert slowest < 5.0, f"a request waited {slowest:.2f} s"
    assert lb.pool.retries_total > 0


async def test_a_slow_backend_that_answers_is_not_taken_for_a_frozen_one(backend_factory, balancer_factory):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="slow")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    slow_backend, fast_backend = await backend_factory(slow), await backend_factory(fast)
    lb = await balancer_factory([slow_backend.address, fast_backend.address], stall_after=1.0)
    statuses, _, answered = await _loop_gets(lb, 8, 3.0)
    assert set(statuses) == {200} and answered["slow"] > 0
    assert lb.pool.retries_total == 0, "each answer from the slow one came from it, never retried"
