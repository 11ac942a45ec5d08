"""Discovery with the in-memory orchestrator, the real pool and a fake clock."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from prometheus_client import CollectorRegistry

from lb.clock import FakeClock
from lb.collect.pool import Pool
from lb.config import Config
from lb.discovery import MAX_BACKOFF_S, Discovery, DnsDiscovery, choose_orchestrator, engine_socket_problem
from lb.orchestrators.base import BackendInfo, Orchestrator, OrchestratorError
from lb.orchestrators.memory import MemoryOrchestrator


def make(backends=("10.0.0.1:8000", "10.0.0.2:8000"), **env):
    config = Config.from_env({"LB_SERVICE": "web", "LB_DISCOVERY_INTERVAL": "1", **env})
    clock = FakeClock()
    pool = Pool(clock)
    orchestrator = MemoryOrchestrator(list(backends))
    registry = CollectorRegistry()
    return Discovery(config, pool, orchestrator, clock, registry=registry), pool, orchestrator, clock, registry


def addresses(pool: Pool) -> list[str]:
    return sorted(b.address for b in pool.backends)


async def test_first_look_fills_the_pool():
    discovery, pool, _, _, _ = make()
    assert await discovery.refresh()
    assert addresses(pool) == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert discovery.status()["backends"] == ["10.0.0.1:8000", "10.0.0.2:8000"]


async def test_new_tasks_join_and_leaving_ones_drain_while_busy():
    discovery, pool, orchestrator, _, _ = make()
    await discovery.refresh()
    busy = pool.get("10.0.0.1:8000")
    started = pool.begin(busy)   # one request in flight on the task about to leave

    orchestrator.backends = ["10.0.0.2:8000", "10.0.0.3:8000"]
    await discovery.refresh()
    assert pool.get("10.0.0.3:8000") is not None
    assert busy.state == "draining" and not busy.serving      # no new requests...
    assert all(pool.pick() is not busy for _ in range(50))
    pool.end(busy, started, 200)                               # ...while its in-flight one finishes
    assert addresses(pool) == ["10.0.0.2:8000", "10.0.0.3:8000"]


async def test_an_unchanged_set_does_not_touch_the_pool():
    discovery, pool, orchestrator, _, _ = make()
    calls = []
    real_update = pool.update
    pool.update = lambda a: (calls.append(list(a)), real_update(a))  # type: ignore[method-assign]
    await discovery.refresh()
    orchestrator.backends = list(reversed(orchestrator.backends))   # same set, another order
    await discovery.refresh()
    await discovery.refresh()
    assert len(calls) == 1 and discovery.changes_total == 1


async def test_an_empty_service_empties_the_pool():
    discovery, pool, orchestrator, _, _ = make()
    await discovery.refresh()
    orchestrator.backends = []
    await discovery.refresh()
    assert addresses(pool) == []


async def test_engine_outage_keeps_the_pool_logs_once_backs_off_and_recovers(caplog):
    caplog.set_level(logging.DEBUG, logger="lb.discovery")
    discovery, pool, orchestrator, _, registry = make()
    await discovery.refresh()
    orchestrator.failure = OrchestratorError("list tasks: Docker engine unreachable")
    pauses = []
    for _ in range(8):
        assert not await discovery.refresh()
        pauses.append(discovery.outage.pause())
    assert addresses(pool) == ["10.0.0.1:8000", "10.0.0.2:8000"]   # the last known pool, untouched
    assert pauses[:3] == [2.0, 4.0, 8.0] and max(pauses) == MAX_BACKOFF_S
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].error
    assert registry.get_sample_value("lb_discovery_errors_total", {"service": "web"}) == 8
    assert registry.get_sample_value("lb_discovery_up", {"service": "web"}) == 0
    assert discovery.status()["ok"] is False

    orchestrator.failure = None
    orchestrator.backends = ["10.0.0.9:8000"]
    assert await discovery.refresh()
    assert discovery.outage.pause() == 1.0
    assert "10.0.0.9:8000" in addresses(pool)
    assert [r.msg for r in caplog.records if r.levelno == logging.INFO][-2:] == \
        ["discovery recovered", "backends changed"]
    assert registry.get_sample_value("lb_discovery_up", {"service": "web"}) == 1
    assert registry.get_sample_value("lb_discovery_backends", {"service": "web"}) == 1

    orchestrator.failure = OrchestratorError("again")   # a new outage is logged again, once
    await discovery.refresh()
    await discovery.refresh()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


class Hanging(MemoryOrchestrator):
    async def running_backends(self) -> list[BackendInfo]:
        await asyncio.Event().wait()
        return []


async def test_an_engine_that_hangs_counts_as_a_failure():
    config = Config.from_env({"LB_SERVICE": "web", "LB_DOCKER_TIMEOUT": "0.01"})
    pool = Pool(FakeClock())
    discovery = Discovery(config, pool, Hanging(), FakeClock())
    assert not await discovery.refresh()
    assert discovery.outage.errors_total == 1 and "timed out" in discovery.outage.last_error


async def test_run_looks_every_interval_and_slower_while_failing():
    discovery, pool, orchestrator, clock, _ = make()
    task = asyncio.create_task(discovery.run())
    try:
        await clock.advance(0)
        assert discovery.looks_total == 1
        for _ in range(3):
            await clock.advance(1.0)
        assert discovery.looks_total == 4
        orchestrator.backends.append("10.0.0.3:8000")
        await clock.advance(1.0)
        assert "10.0.0.3:8000" in addresses(pool)   # a change reaches the pool within an interval

        orchestrator.failure = OrchestratorError("down")
        await clock.advance(1.0)      # fails; next look in 2 s
        looks = discovery.looks_total
        await clock.advance(1.0)
        assert discovery.looks_total == looks
        await clock.advance(1.0)
        assert discovery.looks_total == looks + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_balancer_wires_discovery_into_its_single_route():
    from lb.server import Balancer

    config = Config.from_env({"LB_SERVICE": "web"})
    balancer = Balancer(config, FakeClock(), orchestrator=MemoryOrchestrator(["10.0.0.1:8000"]))
    [route] = balancer.routes
    discovery = balancer.discovery     # Swarm mode: the route's discovery, run by the balancer
    assert discovery is route.discovery and route.loops()["discovery:web"] == discovery.run
    assert balancer.status()["discovery"]["source"] == "engine"
    await discovery.refresh()
    assert balancer.registry.get_sample_value("lb_discovery_backends", {"service": "web"}) == 1
    assert [b.address for b in balancer.pool.backends] == ["10.0.0.1:8000"]


# --- the DNS fallback ------------------------------------------------------------------------
# Swarm's embedded DNS cannot run in a unit test: getaddrinfo is replaced on the loop.

async def test_dns_discovery_lists_task_addresses_and_cannot_scale(monkeypatch):
    config = Config.from_env({"LB_SERVICE": "web", "LB_BACKEND_PORT": "8000"})
    dns = DnsDiscovery(config)
    loop = asyncio.get_running_loop()
    asked = []

    async def getaddrinfo(host, port, **kwargs):
        asked.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.1.7", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.1.5", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::5", port, 0, 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    backends = await dns.running_backends()
    assert asked == [("tasks.web", 8000)]
    assert [b.address for b in backends] == ["10.0.1.5:8000", "10.0.1.7:8000", "[fd00::5]:8000"]
    assert dns.can_scale is False
    assert await dns.current_replicas() == 3
    with pytest.raises(OrchestratorError, match="cannot scale"):
        await dns.scale(4)
    assert Discovery(config, Pool(FakeClock()), dns).status()["source"] == "dns"


async def test_dns_failure_is_an_orchestrator_error(monkeypatch):
    dns = DnsDiscovery(Config.from_env({"LB_SERVICE": "web"}))

    async def getaddrinfo(host, port, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(OrchestratorError, match="tasks.web"):
        await dns.running_backends()


def test_engine_socket_problems(tmp_path):
    assert "does not exist" in engine_socket_problem(f"unix://{tmp_path}/docker.sock")
    (tmp_path / "file").write_text("")
    assert "not a socket" in engine_socket_problem(f"unix://{tmp_path}/file")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "engine.sock"))
    try:
        assert engine_socket_problem(f"unix://{tmp_path}/engine.sock") is None
    finally:
        server.close()
    assert engine_socket_problem("tcp://127.0.0.1:2375") is None


async def test_choose_orchestrator_falls_back_to_dns_with_one_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lb.discovery")
    missing = Config.from_env({"LB_SERVICE": "web", "LB_DOCKER_HOST": f"unix://{tmp_path}/docker.sock"})
    chosen = choose_orchestrator(missing)
    assert isinstance(chosen, DnsDiscovery) and not chosen.can_scale
    assert [r.msg for r in caplog.records] == [
        "no access to the Docker engine: discovering backends by DNS, not scaling"]

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "docker.sock"))
    try:
        chosen = choose_orchestrator(missing)
        assert isinstance(chosen, Orchestrator) and chosen.can_scale and not isinstance(chosen, DnsDiscovery)
        await chosen.close()
    finally:
        server.close()


def test_a_failed_start_is_a_task_created_for_it_not_one_killed_after_running():
    from lb.orchestrators.swarm import _task_errors, _unix

    def task(created: str, state: str, err: str, at: str, desired: str = "shutdown") -> dict:
        return {"CreatedAt": created, "DesiredState": desired, "Status": {"State": state, "Err": err, "Timestamp": at}}

    hold_began = _unix("2026-11-27T11:00:00Z")
    tasks = [
        # ran for an hour, then `docker kill`: its requests are held for the replacement, no failed start
        task("2026-11-27T10:00:00.5Z", "failed", "task: non-zero exit (137)", "2026-11-27T11:00:00.2Z"),
        task("2026-11-27T11:00:01Z", "running", "", "2026-11-27T11:00:02Z", desired="running"),
    ]
    assert [e for at, e in _task_errors(tasks) if at >= hold_began] == []
    # a task created for the start and rejected: that start failed
    tasks.append(task("2026-11-27T11:00:00.3Z", "rejected", "No such image: web:nope", "2026-11-27T11:00:00.4Z"))
    assert [e for at, e in _task_errors(tasks) if at >= hold_began] == ["task rejected: No such image: web:nope"]
