"""Scale to zero and cold starts on a real engine: the stack at zero (LB_MIN_REPLICAS=0 swarm.sh up).

Its own stack name and ports (SWARMSCALE_ZERO_STACK, SWARMSCALE_ZERO_PORT; default ssyz on
28180/28181) so it can run next to the other e2e files. Load only to 127.0.0.1:PORT.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from contextlib import suppress

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

docker = pytest.importorskip("docker")
from lb.orchestrators.swarm import _unix as unix  # noqa: E402
from tests.e2e.conftest import replicas_of, swarm_sh, wait_until  # noqa: E402

STACK = os.environ.get("SWARMSCALE_ZERO_STACK", "ssyz")
PORT = int(os.environ.get("SWARMSCALE_ZERO_PORT", "28180"))
ADMIN_PORT = PORT + 1
SETTINGS = {"LB_MIN_REPLICAS": "0", "LB_SCALE_TO_ZERO_AFTER": "5", "LB_STABLE_WINDOW": "6",
            "LB_PANIC_WINDOW": "2", "LB_SCALE_INTERVAL": "1", "LB_TARGET_INFLIGHT": "8",
            "LB_MAX_REPLICAS": "4", "WEB_LATENCY_MS": "50", "LB_HOLD_TIMEOUT": "60"}


def status() -> dict:
    import json
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/status", timeout=5) as r:
        return json.load(r)


async def burst(n: int) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=90)) as session:
        async def one() -> int:
            try:
                async with session.get(f"http://127.0.0.1:{PORT}/") as r:
                    await r.read()
                    return r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                return -len(repr(exc))
        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture(scope="module")
def stack(engine, images):
    env = dict(os.environ, **SETTINGS, SWARMSCALE_STACK=STACK, LB_PUBLISHED_PORT=str(PORT),
               LB_ADMIN_PUBLISHED_PORT=str(ADMIN_PORT))
    env.pop("WEB_REPLICAS", None)
    swarm_sh("down", env)   # what a killed run left behind: a re-deploy would keep its replicas
    try:
        swarm_sh("up", env)
        yield engine
    finally:
        swarm_sh("down", env)


def at_zero(client) -> None:
    web = f"{STACK}_web"
    wait_until(lambda: replicas_of(client, web) == 0 and not [
        t for t in client.services.get(web).tasks() if t["Status"]["State"] == "running"], 120, "web at 0")


async def test_deployed_at_zero_then_a_burst_is_held_and_every_request_served(stack):
    await asyncio.to_thread(at_zero, stack)
    codes = await burst(32)
    assert codes == [200] * 32
    replicas = status()["replicas"]
    assert replicas["cold_starts"] >= 1 and replicas["held"] == 0
    assert replicas["measured_cold_start_s"] is not None


async def test_idle_goes_back_to_zero_and_one_request_at_zero_is_served(stack):
    await asyncio.to_thread(at_zero, stack)
    # The decision is recorded once the engine has taken it: poll, as a user reading /status would.
    await asyncio.to_thread(wait_until, lambda: status()["replicas"]["last_decision"]["replicas"] == 0, 10,
                            "the decision for 0 in /status")
    assert await burst(1) == [200]


async def test_a_held_client_that_disconnects_is_dropped(stack):
    await asyncio.to_thread(at_zero, stack)
    before = status()["replicas"]["hold_dropped"]
    with socket.create_connection(("127.0.0.1", PORT)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.to_thread(wait_until, lambda: status()["replicas"]["held"] == 1, 10, "a held request")
    await asyncio.to_thread(wait_until, lambda: status()["replicas"]["hold_dropped"] == before + 1, 10,
                            "the dropped request counted")
    assert status()["replicas"]["held"] == 0


async def test_a_start_that_fails_answers_503_quickly_with_the_reason(stack):
    client = stack
    await asyncio.to_thread(at_zero, stack)
    web = client.services.get(f"{STACK}_web")
    good = web.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    web.update(image="swarmscale/web:does-not-exist-zero")
    try:
        began, wall = time.monotonic(), time.time()
        codes = await burst(4)
        took, answered = time.monotonic() - began, time.time()
        assert codes == [503] * 4
        assert took < 10       # the engine rejects within a few seconds; the hold timeout is 60
        # Within 2 s of the engine saying so: its first rejected task since the burst.
        rejected = [unix(t["Status"]["Timestamp"]) for t in client.services.get(f"{STACK}_web").tasks()
                    if t["Status"]["State"] == "rejected" and unix(t["Status"]["Timestamp"]) >= wall - 1]
        assert rejected and answered - min(rejected) < 2.0, (answered - min(rejected)) if rejected else None
        replicas = status()["replicas"]
        assert replicas["cold_start_failures"] >= 1
        assert "No such image" in (replicas["last_cold_start_error"] or "")
    finally:
        with suppress(Exception):
            client.services.get(f"{STACK}_web").update(image=good)
