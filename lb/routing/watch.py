"""The multi-service mode: keep the routes equal to the services labelled swarmscale.enable=true.

Every LB_DISCOVERY_INTERVAL seconds it lists the labelled services the balancer can reach and
applies the difference, touching no other route: a new service gets a route (its own pool,
discovery and control loop); a changed rule or priority is swapped into the table in place; other
changed labels (port, scaling settings) give the route new loops over the same pool, so requests in
flight finish; a service gone, or whose labels turned invalid, leaves the table (its requests in
flight finish). An invalid service gets one log line per distinct error and shows it in /status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.clock import Clock
from lb.config import Config
from lb.orchestrators.base import Catalog, OrchestratorError, ServiceInfo
from lb.orchestrators.outage import Outage, bounded
from lb.routing.labels import LabelError, ServiceRoute, enabled, parse_labels
from lb.routing.route import Route
from lb.routing.table import RouteTable

log = logging.getLogger("lb.routing")

MAX_BACKOFF_S = 10.0


class RouteSink(Protocol):
    """What the watcher changes: the balancer's routes (lb.server.Balancer)."""

    routes: RouteTable

    def add_route(self, route: Route) -> None: ...
    def remove_route(self, name: str) -> Route | None: ...


class ServiceWatcher:
    def __init__(self, config: Config, catalog: Catalog, sink: RouteSink, clock: Clock) -> None:
        self.config = config
        self.catalog = catalog
        self.sink = sink
        self.clock = clock
        self.specs: dict[str, ServiceRoute] = {}
        self.errors: dict[str, tuple[str, str]] = {}   # service -> (its rule label, error)
        self.looks_total = 0
        self.outage = Outage(clock, config.discovery_interval, MAX_BACKOFF_S, log, "service discovery")

    async def run(self) -> None:
        while True:
            await self.refresh()
            await self.clock.sleep(self.outage.pause())

    async def refresh(self) -> bool:
        self.looks_total += 1
        try:
            found = await bounded(self.catalog.labelled_services(), self.config.docker_timeout * 4,
                                  "listing labelled services")
        except OrchestratorError as exc:
            self.outage.failed(exc, services=sorted(self.specs))   # routes stay as they are
            return False
        self.outage.recovered()
        self.apply(found)
        return True

    def apply(self, found: list[ServiceInfo]) -> None:
        seen = set()
        for service in found:
            if not enabled(service.labels):
                continue
            name = service.name
            seen.add(name)
            try:
                spec = parse_labels(service.labels, self.config, service.short_name)
            except LabelError as exc:
                self._invalid(name, service.labels.get("swarmscale.rule", ""), str(exc))
                continue
            if name in self.errors:
                del self.errors[name]
                log.info("service labels valid again", extra={"service": name})
            self._apply_one(name, spec)
        for name in sorted(set(self.specs) - seen):
            del self.specs[name]
            self.sink.remove_route(name)
            log.info("route removed", extra={"service": name, "reason": "service gone or no longer enabled"})
        for name in set(self.errors) - seen:
            del self.errors[name]

    def _invalid(self, name: str, rule: str, error: str) -> None:
        if self.errors.get(name, ("", ""))[1] != error:
            log.warning("service left out: invalid labels", extra={"service": name, "error": error})
        self.errors[name] = (rule, error)
        if self.specs.pop(name, None) is not None:
            self.sink.remove_route(name)

    def _apply_one(self, name: str, spec: ServiceRoute) -> None:
        old = self.specs.get(name)
        if old == spec:
            return
        if spec.ignored and (old is None or old.ignored != spec.ignored):
            log.warning("unknown swarmscale labels ignored", extra={"service": name, "labels": list(spec.ignored)})
        self.specs[name] = spec
        route = self.sink.routes.routes.get(name)
        if route is not None and old is not None and old.same_service(spec):
            route.rule = spec.rule
            route.priority = spec.rule.default_priority if spec.priority is None else spec.priority
            self.sink.routes.rebuild()
            log.info("route changed", extra={"service": name, "rule": spec.rule.text, "priority": route.priority})
            return
        config = spec.config(self.config, name)
        new = Route(name, config, self.clock, rule=spec.rule, priority=spec.priority,
                    pool=route.pool if route is not None else None)
        new.attach(self.catalog.orchestrator(config), discover=True, scale=spec.scale)
        self.sink.add_route(new)
        log.info("route changed" if route is not None else "route added", extra={
            "service": name, "rule": spec.rule.text, "priority": new.priority, "port": spec.port,
            "scale": spec.scale, "settings": spec.overrides})

    def invalid_status(self) -> list[dict[str, Any]]:
        """/status `services` entries of services left out for their labels."""
        return [{"name": name, "rule": rule, "replicas": {}, "backends": [], "error": error}
                for name, (rule, error) in sorted(self.errors.items())]

    def status(self) -> dict[str, Any]:
        return {"source": "labels", "ok": self.outage.ok, "errors": self.outage.errors_total,
                "last_error": self.outage.last_error, "services": sorted(self.specs),
                "invalid": sorted(self.errors)}


class WatchCollector(Collector):
    """How many labelled services are routed and how many are left out for their labels."""

    def __init__(self, watcher: ServiceWatcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[Metric]:
        w = self.watcher
        yield GaugeMetricFamily("lb_routes", "Labelled services routed now", value=len(w.specs))
        yield GaugeMetricFamily("lb_routes_invalid", "Labelled services left out for invalid labels",
                                value=len(w.errors))
        yield CounterMetricFamily("lb_service_discovery_errors", "Failed looks at the labelled services",
                                  value=w.outage.errors_total)
