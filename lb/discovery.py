"""Discovery: keep the proxy's backend pool equal to the service's running (and healthy) tasks.

Every LB_DISCOVERY_INTERVAL seconds it asks the orchestrator for the running backends and hands the
set to `pool.update()`: new tasks join (in slow start), tasks that left the desired state `running`
get no new requests while their in-flight ones finish. When the engine fails, the last known pool
stays, one log line says so (one per outage, not one per try), the looks back off, and a line says
when it is back.

Without access to the engine's socket, `choose_orchestrator` falls back to `DnsDiscovery`: the
tasks' addresses from DNS `tasks.<service>` (Swarm's embedded DNS), and no scaling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from lb.clock import Clock, Waker
from lb.config import Config
from lb.orchestrators.base import BackendInfo, Orchestrator, OrchestratorError
from lb.orchestrators.outage import Outage, bounded

log = logging.getLogger("lb.discovery")

#: Longest pause between looks while the engine keeps failing.
MAX_BACKOFF_S = 10.0
#: Pause between looks while requests are held for a first ready backend (a cold start).
URGENT_S = 0.1


class _Pool(Protocol):
    def update(self, addresses: Iterable[str]) -> None: ...


class Discovery:
    def __init__(self, config: Config, pool: _Pool, orchestrator: Orchestrator, clock: Clock | None = None,
                 registry: CollectorRegistry | None = None, name: str = "") -> None:
        self.config = config
        self.name = name or config.service
        self.pool = pool
        self.orchestrator = orchestrator
        self.clock = clock or Clock()
        self.source = "dns" if isinstance(orchestrator, DnsDiscovery) else "engine"
        self.backends: list[str] | None = None   # last set handed to the pool; None before the first
        self.looks_total = 0
        self.changes_total = 0
        self.outage = Outage(self.clock, config.discovery_interval, MAX_BACKOFF_S, log, "discovery")
        if registry is not None:
            registry.register(DiscoveryCollector(lambda: (self,)))
        #: True while requests wait for a first ready backend: look every URGENT_S then.
        self.urgent: Callable[[], bool] | None = None
        self._waker = Waker()

    def wake(self) -> None:
        """Look now (the first request was held), not at the end of the current pause."""
        self._waker.wake()

    async def run(self) -> None:
        """Look, then wait, until cancelled."""
        while True:
            await self.refresh()
            pause = self.outage.pause()
            if self.urgent is not None and self.urgent() and self.outage.ok:
                pause = min(pause, URGENT_S)
            await self._waker.sleep(self.clock, pause)

    async def refresh(self) -> bool:
        """One look. True when it succeeded (whether or not the set changed)."""
        self.looks_total += 1
        try:
            found = await bounded(self.orchestrator.running_backends(), self.config.docker_timeout * 4,
                                  "listing the service's tasks")
        except OrchestratorError as exc:
            # Keep the last known backends: the tasks go on serving while the engine is away.
            self.outage.failed(exc, backends=self.backends or [])
            return False
        self.outage.recovered()
        self._apply(found)
        return True

    def _apply(self, found: list[BackendInfo]) -> None:
        addresses = sorted({b.address for b in found})
        if addresses == self.backends:
            return
        before = set(self.backends or ())
        self.pool.update(addresses)
        self.changes_total += 1
        log.info("backends changed", extra={
            "backends": addresses, "added": sorted(set(addresses) - before),
            "removed": sorted(before - set(addresses)), "source": self.source, "service": self.name})
        self.backends = addresses

    def status(self) -> dict[str, Any]:
        """What /status shows under `discovery`."""
        outage = self.outage
        return {"source": self.source, "ok": outage.ok, "backends": self.backends or [],
                "errors": outage.errors_total, "changes": self.changes_total, "last_error": outage.last_error,
                "can_scale": self.orchestrator.can_scale}


class DiscoveryCollector(Collector):
    """Read at scrape time, like the pool's collector: the loops only bump plain integers."""

    def __init__(self, discoveries: Callable[[], Iterable[Discovery]]) -> None:
        self.discoveries = discoveries

    def collect(self) -> Iterator[Metric]:
        labels = ["service"]
        errors = CounterMetricFamily("lb_discovery_errors", "Failed looks at the service's tasks "
                                     "(engine unreachable, slow or refusing)", labels=labels)
        changes = CounterMetricFamily("lb_discovery_changes", "Times the set of backends changed", labels=labels)
        up = GaugeMetricFamily("lb_discovery_up", "1 when the last look at the service's tasks succeeded",
                               labels=labels)
        backends = GaugeMetricFamily("lb_discovery_backends", "Backends discovery last found", labels=labels)
        conflicts = CounterMetricFamily("lb_scale_update_conflicts", "Service updates the engine refused as "
                                        "out of sequence (re-read and retried)", labels=labels)
        for d in self.discoveries():
            errors.add_metric([d.name], d.outage.errors_total)
            changes.add_metric([d.name], d.changes_total)
            up.add_metric([d.name], 0 if d.outage.failures else 1)
            backends.add_metric([d.name], len(d.backends or ()))
            n = getattr(d.orchestrator, "update_conflicts", None)
            if n is not None:
                conflicts.add_metric([d.name], n)
        yield from (errors, changes, up, backends, conflicts)


class DnsDiscovery(Orchestrator):
    """Backends from Swarm's DNS `tasks.<service>`, for a balancer without the engine's socket.

    It cannot scale (can_scale False) and sees every task with an address, healthy or not: the
    proxy's own ejection of failing backends is what protects clients here.
    """

    can_scale = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.host = f"tasks.{config.service}"

    async def running_backends(self) -> list[BackendInfo]:
        loop = asyncio.get_running_loop()
        port = self.config.backend_port
        try:
            infos = await bounded(loop.getaddrinfo(self.host, port, type=socket.SOCK_STREAM),
                                  self.config.docker_timeout, f"DNS lookup of {self.host}")
        except OSError as exc:
            raise OrchestratorError(f"DNS lookup of {self.host} failed: {exc}") from None
        hosts = sorted({str(info[4][0]) for info in infos})
        return [BackendInfo(f"[{h}]:{port}" if ":" in h else f"{h}:{port}") for h in hosts]

    async def current_replicas(self) -> int:
        return len(await self.running_backends())

    async def scale(self, replicas: int) -> None:
        raise OrchestratorError("DNS discovery cannot scale (no access to the Docker engine)")


def engine_socket_problem(docker_host: str) -> str | None:
    """Why the engine's socket cannot be used at all (missing, not a socket, no permission), or None.

    An engine that exists but does not answer yet is not this: that is an outage to wait out.
    """
    if not docker_host.startswith("unix://"):
        return None
    path = docker_host[len("unix://"):]
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist (mount the engine's socket to scale)"
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISSOCK(mode):
        return f"{path} is not a socket"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path}: permission denied"
    return None


def choose_orchestrator(config: Config) -> Orchestrator:
    """The Swarm orchestrator when the engine's socket is there; DNS discovery (no scaling) otherwise."""
    problem = engine_socket_problem(config.docker_host)
    if problem is None:
        from lb.orchestrators.swarm import SwarmOrchestrator  # imports `docker` only when needed

        return SwarmOrchestrator(config)
    log.warning("no access to the Docker engine: discovering backends by DNS, not scaling", extra={
        "reason": problem, "dns_name": f"tasks.{config.service}"})
    return DnsDiscovery(config)
