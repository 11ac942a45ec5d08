"""The admin port: /healthz, /metrics, /status, and the hooks other parts plug into."""

from __future__ import annotations

import asyncio

import aiohttp

from lb.config import Config, HostPort
from lb.server import Balancer
from tests.integration.conftest import LOCAL


async def test_healthz_metrics_status(backend_factory, balancer_factory):
    backend = await backend_factory()
    lb = await balancer_factory([backend.address])
    lb.status_extra["extra"] = lambda: {"desired": 3}
    base = f"http://{LOCAL}:{lb.admin_port}"
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            async with session.get(f"http://{LOCAL}:{lb.proxy_port}/x{i}") as r:
                assert r.status == 200
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
        async with session.get(f"{base}/status") as r:
            status = await r.json()
    # Every per-backend and scaling series names its service (the single-service mode's route here).
    assert f'lb_requests_total{{backend="{backend.address}",code="200",service="backends"}} 5.0' in text
    assert 'lb_request_duration_seconds_count{service="backends"} 5.0' in text
    assert f'lb_backend_inflight{{backend="{backend.address}",service="backends"}} 0.0' in text
    for name in ('lb_retries_total{service="backends"} 0.0', 'lb_ejections_total{service="backends"} 0.0',
                 'lb_backends{service="backends",state="active"} 1.0', 'lb_scale_decisions_total{service="backends"}'):
        assert name in text
    [entry] = status["backends"]
    assert entry["address"] == backend.address and entry["inflight"] == 0 and entry["state"] == "active"
    assert entry["latency_ms"] > 0
    assert status["extra"] == {"desired": 3}
    assert status["replicas"]["policy_errors"] == 0
    [service] = status["services"]   # one route that matches everything
    assert service["name"] == "backends" and service["rule"] == "" and service["error"] is None
    assert service["backends"] == status["backends"]


async def test_background_loops_run_and_are_cancelled():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def loop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    lb = Balancer(Config.from_env({"LB_DOCKER_HOST": "unix:///nonexistent"},
                                  listen=HostPort(LOCAL, 0), admin_listen=HostPort(LOCAL, 0)))
    lb.background.append(loop)
    await lb.start()
    await started.wait()
    await lb.shutdown()
    assert cancelled.is_set()
