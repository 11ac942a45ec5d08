"""Scale to zero and cold starts on loopback: the balancer in-process, real sockets, and a service
whose replicas are real aiohttp backends that start a while after the balancer asks for them.

The orchestrator here stands in for the engine (the engine's part is tested in tests/e2e/test_zero.py).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from lb.config import Config, HostPort
from lb.orchestrators.base import BackendInfo, Orchestrator
from lb.server import Balancer
from tests.integration.conftest import LOCAL, read_response


class SlowStartService(Orchestrator):
    """Replicas that serve `start_s` seconds after a scale-up (a real listener each), or never start."""

    def __init__(self, replicas: int = 0, start_s: float = 0.4, error: str | None = None) -> None:
        self.replicas = replicas
        self.start_s = start_s
        self.error = error
        self.scale_calls: list[int] = []
        self.error_at: float | None = None
        self.runners: list[web.AppRunner] = []
        self.addresses: list[str] = []
        self._starting: asyncio.Task | None = None

    async def current_replicas(self) -> int:
        return self.replicas

    async def scale(self, replicas: int) -> None:
        self.scale_calls.append(replicas)
        self.replicas = replicas
        if replicas == 0:
            self.addresses = []
        elif self.error is not None:
            self.error_at = time.time()
        elif self._starting is None or self._starting.done():
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        await asyncio.sleep(self.start_s)
        while len(self.addresses) < self.replicas:
            async def handle(request: web.Request) -> web.Response:
                await asyncio.sleep(float(request.query.get("sleep", "0")))
                return web.Response(text="ok")
            async def websocket(request: web.Request) -> web.WebSocketResponse:
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str(message.data)
                return ws
            app = web.Application()
            app.router.add_get("/", handle)
            app.router.add_get("/ws", websocket)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, LOCAL, 0)
            await site.start()
            self.runners.append(runner)
            self.addresses.append(f"{LOCAL}:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]

    async def running_backends(self) -> list[BackendInfo]:
        return [BackendInfo(a) for a in self.addresses]

    def start_error(self, since_wall: float) -> str | None:
        if self.error_at is not None and self.error_at >= since_wall:
            return f"task rejected: {self.error}"
        return None

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def start(service: SlowStartService, **env: str) -> Balancer:
    values = {"LB_SERVICE": "web", "LB_MIN_REPLICAS": "0", "LB_TARGET_INFLIGHT": "4",
              "LB_DISCOVERY_INTERVAL": "1", "LB_SCALE_INTERVAL": "1", "LB_STABLE_WINDOW": "1",
              "LB_PANIC_WINDOW": "1", "LB_SCALE_TO_ZERO_AFTER": "60", **env}
    config = Config.from_env(values, listen=HostPort(LOCAL, 0), admin_listen=HostPort(LOCAL, 0))
    balancer = Balancer(config, orchestrator=service)
    await balancer.start()
    return balancer


@pytest.fixture
async def balancers():
    started: list[Balancer] = []
    yield started
    for balancer in started:
        await balancer.shutdown()


async def get(session: aiohttp.ClientSession, lb: Balancer, path: str = "/") -> tuple[int, float, dict]:
    began = time.monotonic()
    async with session.get(f"http://{LOCAL}:{lb.proxy_port}{path}") as r:
        await r.read()
        return r.status, time.monotonic() - began, dict(r.headers)


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_burst_at_zero_is_held_then_served_and_scaled_once_for_all_of_it(balancers):
    service = SlowStartService(start_s=0.5)
    lb = await start(service)
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(get(session, lb) for _ in range(20)))
    assert [status for status, _, _ in results] == [200] * 20
    # One scale call for the whole burst, for ceil(20 held / 4 per replica), not 1 and then more.
    assert service.scale_calls[0] == 5
    assert min(seconds for _, seconds, _ in results) >= 0.45   # they really waited for the start
    replicas = lb.status()["replicas"]
    assert replicas["held"] == 0 and replicas["cold_starts"] == 1
    assert replicas["last_cold_start_s"] >= 0.45
    assert replicas["measured_cold_start_s"] >= 0.45
    assert lb.pool.inflight == 0 and lb.pool.held == 0


async def test_one_request_at_zero_is_served_and_counted(balancers):
    service = SlowStartService(start_s=0.2)
    lb = await start(service)
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        status, _, _ = await get(session, lb)
        assert status == 200
        status, _, _ = await get(session, lb)   # warm now: not held
    assert status == 200 and service.scale_calls == [1]
    assert lb.status()["replicas"]["cold_starts"] == 1


async def test_a_service_above_zero_whose_tasks_are_still_starting_holds_too(balancers):
    service = SlowStartService(replicas=2, start_s=0.6)
    lb = await start(service)
    balancers.append(lb)
    service._starting = asyncio.get_running_loop().create_task(service._start())   # tasks on their way
    async with aiohttp.ClientSession() as session:
        status, seconds, _ = await get(session, lb)
    assert status == 200 and seconds >= 0.4
    assert service.scale_calls == []          # 2 already asked for: no engine call for the held request


async def test_the_only_task_killed_mid_request_its_requests_wait_for_the_replacement(balancers):
    """The service at one task, which dies with requests in flight (`docker kill`, an OOM kill): they
    were sent and never answered, and there is no other backend to retry them on. They wait for the
    task Swarm starts in its place, as a request at zero does, instead of a 502 each."""
    service = SlowStartService(replicas=1, start_s=0.0)
    await service._start()
    lb = await start(service, LB_MIN_REPLICAS="1")
    balancers.append(lb)
    await until(lambda: lb.pool.ready_count() == 1)
    [runner] = service.runners

    async def kill_and_replace() -> None:
        await until(lambda: lb.pool.inflight == 8)
        for conn in list(runner.server.connections):   # type: ignore[union-attr]
            conn.transport.abort()                      # every connection reset at once, as at a kill
        await runner.cleanup()
        service.addresses = []
        await asyncio.sleep(0.5)                         # Swarm notices and starts a new task
        await service._start()

    async with aiohttp.ClientSession() as session:
        killer = asyncio.create_task(kill_and_replace())
        results = await asyncio.gather(*(get(session, lb, "/?sleep=2") for _ in range(8)))
        await killer
        assert [status for status, _, _ in results] == [200] * 8
        assert (await get(session, lb))[0] == 200
    assert lb.pool.retries_total >= 8 and lb.pool.active_retries == 0
    assert lb.pool.inflight == 0 and lb.pool.held == 0


async def test_a_failing_start_answers_every_held_request_503_at_once_and_then_backs_off(balancers):
    service = SlowStartService(error="No such image: web:nope")
    lb = await start(service)
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(get(session, lb) for _ in range(5)))
        assert [status for status, _, _ in results] == [503] * 5
        assert max(seconds for _, seconds, _ in results) < 2.0
        assert all(headers.get("Retry-After") for _, _, headers in results)
        status, seconds, _ = await get(session, lb)   # within the backoff: refused at once
        assert status == 503 and seconds < 0.5
    replicas = lb.status()["replicas"]
    assert replicas["cold_start_failures"] == 1 and "No such image" in replicas["last_cold_start_error"]
    assert service.scale_calls == [2]   # ceil(5 / 4); the failures did not call the engine again
    assert lb.pool.held == 0


async def test_a_request_held_too_long_gets_504(balancers):
    service = SlowStartService(start_s=30)
    lb = await start(service, LB_HOLD_TIMEOUT="0.3")
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        status, seconds, _ = await get(session, lb)
    assert status == 504 and seconds < 2.0
    assert lb.status()["replicas"]["hold_timeouts"] == 1


async def test_past_hold_max_the_next_request_gets_503_with_retry_after_at_once(balancers):
    service = SlowStartService(start_s=0.8)
    lb = await start(service, LB_HOLD_MAX="2")
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        held = [asyncio.create_task(get(session, lb)) for _ in range(2)]
        await until(lambda: lb.pool.held == 2)
        status, seconds, headers = await get(session, lb)
        assert status == 503 and seconds < 0.5 and headers.get("Retry-After")
        assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200]


async def test_a_held_client_that_goes_away_is_dropped_and_counted(balancers):
    service = SlowStartService(start_s=1.0)
    lb = await start(service)
    balancers.append(lb)
    reader, writer = await asyncio.open_connection(LOCAL, lb.proxy_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await until(lambda: lb.pool.held == 1)
    writer.close()
    await until(lambda: lb.pool.held == 0)
    assert lb.status()["replicas"]["hold_dropped"] == 1
    # The start goes on and the next request is served.
    reader, writer = await asyncio.open_connection(LOCAL, lb.proxy_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status == 200
    assert lb.pool.inflight == 0


async def warm_and_quick_to_idle(balancers: list) -> tuple[SlowStartService, Balancer]:
    """One replica serving, behind a balancer that takes it to zero after 0.5 s idle."""
    service = SlowStartService(replicas=1, start_s=0.0)
    await service._start()
    lb = await start(service, LB_SCALE_TO_ZERO_AFTER="0.5", LB_SCALE_INTERVAL="0.2", LB_DISCOVERY_INTERVAL="0.2")
    balancers.append(lb)
    await until(lambda: lb.pool.ready_count() == 1)
    return service, lb


async def test_idle_goes_to_zero_but_never_while_a_request_is_open(balancers):
    service, lb = await warm_and_quick_to_idle(balancers)
    async with aiohttp.ClientSession() as session:
        status, _, _ = await get(session, lb, "/?sleep=2.5")   # longer than the idle time and a window
    assert status == 200
    assert 0 not in service.scale_calls                      # not while it was open
    # The decision that scaled to zero is recorded once the engine call returns (a moment after the
    # count changed) and is followed by quieter ones: watch for it rather than read it once.
    seen: list[dict] = []

    def scaled_to_zero() -> bool:
        decision = lb.status()["replicas"]["last_decision"] or {}
        if decision.get("scaled") and decision.get("replicas") == 0:
            seen.append(decision)
        return bool(seen)

    await until(scaled_to_zero, timeout=5)
    assert service.replicas == 0 and "idle" in seen[0]["reason"]
    # And back from zero for the next request.
    await until(lambda: lb.pool.ready_count() == 0)
    async with aiohttp.ClientSession() as session:
        status, _, _ = await get(session, lb)
    assert status == 200 and service.scale_calls[-1] == 1


async def test_an_open_websocket_keeps_the_service_from_zero(balancers):
    service, lb = await warm_and_quick_to_idle(balancers)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://{LOCAL}:{lb.proxy_port}/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive()).data == "hi"
            await asyncio.sleep(2.5)               # idle time and a stable window pass, the socket open
            assert service.replicas == 1 and 0 not in service.scale_calls
            assert lb.status()["replicas"]["last_decision"]["inputs"]["idle_s"] == 0
    await until(lambda: service.replicas == 0, timeout=5)   # closed: idle, so to zero


async def test_metrics_show_held_requests_and_cold_starts(balancers):
    service = SlowStartService(start_s=0.2)
    lb = await start(service)
    balancers.append(lb)
    async with aiohttp.ClientSession() as session:
        assert (await get(session, lb))[0] == 200
        async with session.get(f"http://{LOCAL}:{lb.admin_port}/metrics") as r:
            text = await r.text()
    assert 'lb_held_requests{service="web"} 0.0' in text
    assert 'lb_cold_starts_total{service="web"} 1.0' in text
    assert 'lb_cold_start_failures_total{service="web"} 0.0' in text
    assert 'lb_hold_seconds_count{service="web"} 1.0' in text
