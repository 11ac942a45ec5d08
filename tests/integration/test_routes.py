"""Several services behind one balancer, routed by Host and path: real sockets, services from labels.

The labelled services come from an in-memory catalog (the engine's part is tested in tests/e2e);
everything from the listener to the backends is real.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from lb.config import Config, HostPort
from lb.orchestrators.memory import MemoryCatalog
from lb.server import Balancer
from tests.integration.conftest import LOCAL

ALPHA = {"swarmscale.enable": "true", "swarmscale.rule": "Host(`alpha.test`)"}
BETA = {"swarmscale.enable": "true", "swarmscale.rule": "Host(`beta.test`) && PathPrefix(`/api`)",
        "swarmscale.min-replicas": "2", "swarmscale.scale": "true"}


def named(name: str, delay: float = 0.0):
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(delay)
        return web.Response(text=name)
    return handle


async def until(condition, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def get(session: aiohttp.ClientSession, lb: Balancer, host: str, path: str = "/") -> tuple[int, str]:
    async with session.get(f"http://{LOCAL}:{lb.proxy_port}{path}", headers={"Host": host}) as r:
        return r.status, await r.text()


async def start(catalog: MemoryCatalog) -> Balancer:
    config = Config.from_env({"LB_DISCOVERY_INTERVAL": "0.1", "LB_SCALE_INTERVAL": "0.2"},
                             listen=HostPort(LOCAL, 0), admin_listen=HostPort(LOCAL, 0))
    lb = Balancer(config, catalog=catalog)
    await lb.start()
    return lb


async def test_routes_by_host_and_path_and_404_names_host_and_path(backend_factory):
    alpha, beta = await backend_factory(named("alpha")), await backend_factory(named("beta"))
    catalog = MemoryCatalog()
    catalog.add("s_alpha", ALPHA, [alpha.address])
    beta_orch = catalog.add("s_beta", BETA, [beta.address])
    lb = await start(catalog)
    try:
        await until(lambda: all(len(r.pool.backends) == 1 for r in lb.routes) and len(lb.routes) == 2)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            assert await get(session, lb, "alpha.test") == (200, "alpha")
            assert await get(session, lb, "ALPHA.test:8080", "/x") == (200, "alpha")
            assert await get(session, lb, "beta.test", "/api/v1") == (200, "beta")
            status, body = await get(session, lb, "beta.test", "/other")
            assert status == 404 and body == "no route for host beta.test and path /other\n"
            status, body = await get(session, lb, "gamma.test")
            assert status == 404 and "gamma.test" in body
            async with session.get(f"http://{LOCAL}:{lb.admin_port}/status") as r:
                status_doc = await r.json()
            async with session.get(f"http://{LOCAL}:{lb.admin_port}/metrics") as r:
                metrics = await r.text()
        services = {s["name"]: s for s in status_doc["services"]}
        assert services["s_beta"]["rule"] == BETA["swarmscale.rule"] and services["s_beta"]["error"] is None
        assert [b["address"] for b in services["s_alpha"]["backends"]] == [alpha.address]
        assert f'lb_requests_total{{backend="{alpha.address}",code="200",service="s_alpha"}} 2.0' in metrics
        assert 'lb_requests_total{backend="none",code="404",service="none"} 2.0' in metrics
        # Each service is scaled by its own settings: beta's label asks for at least 2.
        await until(lambda: beta_orch.replicas == 2)
        assert catalog.orchestrators["s_alpha"].replicas == 1
    finally:
        await lb.shutdown()


async def test_changes_apply_without_touching_other_routes(backend_factory):
    alpha = await backend_factory(named("alpha", delay=1.0))
    beta = await backend_factory(named("beta"))
    catalog = MemoryCatalog()
    catalog.add("s_alpha", ALPHA, [alpha.address])
    catalog.add("s_beta", BETA, [beta.address])
    lb = await start(catalog)
    try:
        await until(lambda: len(lb.routes) == 2 and all(r.pool.backends for r in lb.routes))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            # A request in flight on alpha while beta's rule changes, a bad service comes and beta goes.
            slow = asyncio.create_task(get(session, lb, "alpha.test", "/slow"))
            await asyncio.sleep(0.1)
            catalog.add("s_beta", {**BETA, "swarmscale.rule": "Host(`beta2.test`)"}, [beta.address])
            catalog.add("s_bad", {"swarmscale.enable": "true", "swarmscale.rule": "Host(`bad.test`"}, [beta.address])
            took = await until(lambda: lb.routes.match("beta2.test", "/") is not None)
            assert took < 2.0
            assert await get(session, lb, "beta2.test") == (200, "beta")
            assert (await get(session, lb, "beta.test", "/api/x"))[0] == 404
            assert (await get(session, lb, "bad.test"))[0] == 404
            assert lb.registry.get_sample_value("lb_routes_invalid") == 1
            assert lb.registry.get_sample_value("lb_routes") == 2
            status_doc = lb.status()
            [bad] = [s for s in status_doc["services"] if s["name"] == "s_bad"]   # type: ignore[union-attr]
            assert bad["error"].startswith("swarmscale.rule=")
            catalog.remove("s_beta")
            await until(lambda: "s_beta" not in lb.routes.routes)
            assert (await get(session, lb, "beta2.test"))[0] == 404
            assert await slow == (200, "alpha")       # untouched by all of the above
            catalog.add("s_beta", BETA, [beta.address])
            await until(lambda: lb.routes.match("beta.test", "/api") is not None
                        and bool(lb.routes.routes["s_beta"].pool.backends))
            assert await get(session, lb, "beta.test", "/api/again") == (200, "beta")
    finally:
        await lb.shutdown()
