"""The balancer: the proxy listener, the admin port, background loops, and graceful shutdown.

Shutdown follows uvicorn's order: stop accepting, let in-flight requests finish (within
LB_DRAIN_TIMEOUT; /healthz says 503 meanwhile), close connections, then cancel background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from lb.admin import AdminGuard, make_app
from lb.clock import Clock
from lb.collect.metrics import PoolCollector
from lb.collect.pool import Pool
from lb.config import Config, ConfigError
from lb.control import ControlCollector, ControlLoop
from lb.discovery import Discovery, DiscoveryCollector, choose_orchestrator, engine_socket_problem
from lb.orchestrators.base import Catalog, Orchestrator
from lb.orchestrators.memory import MemoryOrchestrator
from lb.proxy.protocol import Proxy
from lb.routing.hold import HoldCollector
from lb.routing.route import Route
from lb.routing.table import RouteTable
from lb.routing.watch import ServiceWatcher, WatchCollector
from lb.supervise import Supervisor

_SWEEP_S = 0.5   # at most this long between looks for timed-out requests and idle connections
_SWEEP_MIN_S = 0.01


class Balancer:
    def __init__(self, config: Config, clock: Clock | None = None,
                 orchestrator: Orchestrator | None = None, catalog: Catalog | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.log = logging.getLogger("lb")
        self.routes = RouteTable()
        #: Where a request that matches no route goes: an empty pool, answered 404.
        self.not_found = Route("none", config, self.clock)
        self.not_found.not_found = True
        self.supervisor = Supervisor(self.clock)
        self.registry = CollectorRegistry()
        self.registry.register(PoolCollector(self._pools))
        self.registry.register(ControlCollector(lambda: [r.control for r in self.routes if r.control]))
        self.registry.register(DiscoveryCollector(lambda: [r.discovery for r in self.routes if r.discovery]))
        self.registry.register(self.supervisor)
        self.registry.register(HoldCollector(lambda: [r.pool.hold for r in self.routes if r.pool.hold]))
        #: Extra /status keys and background loops (tests and tools plug in here).
        self.status_extra: dict[str, Callable[[], object]] = {}
        self.background: list[Callable[[], Awaitable[None]]] = []
        self.orchestrator: Orchestrator | None = None
        self.watcher: ServiceWatcher | None = None
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()
        if config.labels_mode and orchestrator is None:
            self._wire_labels(catalog)
        else:
            self._wire_single(orchestrator)
        self.draining = False
        self.proxy: Proxy | None = None
        self.proxy_port = 0
        self.admin_port = 0
        self._server: asyncio.AbstractServer | None = None
        self._admin: web.AppRunner | None = None
        self._admin_server: asyncio.AbstractServer | None = None
        self.admin_guard: AdminGuard | None = None
        self._stopped: asyncio.Event | None = None

    def _wire_single(self, orchestrator: Orchestrator | None) -> None:
        """The single-service mode: one route that matches everything.

        Collect -> decide -> act: discovery (Swarm mode) and the control loop run as the route's loops.
        Static LB_BACKENDS get an in-memory orchestrator that records what the policy wants.
        """
        config = self.config
        if orchestrator is None:
            if config.swarm_mode:
                orchestrator = choose_orchestrator(config)
            else:
                orchestrator = MemoryOrchestrator([str(b) for b in config.backends])
        self.orchestrator = orchestrator
        route = Route(config.service or "backends", config, self.clock)
        if config.backends:
            route.pool.update(str(b) for b in config.backends)
        route.attach(orchestrator, discover=config.swarm_mode, scale=True)
        self.add_route(route)

    def _wire_labels(self, catalog: Catalog | None) -> None:
        """The multi-service mode: a route per labelled service, kept up to date by a watcher."""
        if catalog is None:
            problem = engine_socket_problem(self.config.docker_host)
            if problem is not None:
                # As before routes: one catch-all route with no backends (503 with Retry-After).
                self.log.warning("LB_SERVICE and LB_BACKENDS are empty and the Docker engine is out of reach: "
                                 "no labelled services to serve", extra={"reason": problem})
                self._wire_single(None)
                return
            from lb.orchestrators.swarm import SwarmCatalog  # imports `docker` only when needed

            catalog = SwarmCatalog(self.config)
        self.catalog = catalog
        self.watcher = ServiceWatcher(self.config, catalog, self, self.clock)
        self.registry.register(WatchCollector(self.watcher))

    # --- routes --------------------------------------------------------------------------------
    def _pools(self) -> list[tuple[str, Pool]]:
        pools = [(r.name, r.pool) for r in self.routes]
        if self.not_found.pool.unrouted_requests:
            pools.append((self.not_found.name, self.not_found.pool))
        return pools

    def add_route(self, route: Route) -> None:
        """Serve `route` (replacing one of the same name) and run its loops."""
        old = self.routes.routes.get(route.name)
        if old is not None and old is not route:
            self._stop_loops(old)
            if old.orchestrator is not route.orchestrator:
                self._close_later(old)
        self.routes.put(route)
        if route.control is not None:
            route.control.open_streams = lambda: self._open_streams(route)
        if self._started:
            self._start_loops(route)

    def remove_route(self, name: str) -> Route | None:
        """Stop matching `name`; its in-flight requests finish, its connections close as they free."""
        route = self.routes.remove(name)
        if route is not None:
            self._stop_loops(route)
            route.pool.update([])
            if route.pool.hold is not None:
                route.pool.hold.give_up("the service's route was removed")
            self._close_later(route)
        return route

    def _open_streams(self, route: Route) -> int:
        """WebSockets (upgraded connections) open to `route`'s backends: its service is not idle."""
        if self.proxy is None:
            return 0
        pool = route.pool
        return sum(1 for c in self.proxy.connections
                   if c.tunnel is not None and pool.get(c.tunnel.backend.address) is c.tunnel.backend)

    def _close_later(self, route: Route) -> None:
        if route.orchestrator is not None:
            task = asyncio.get_running_loop().create_task(route.orchestrator.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _start_loops(self, route: Route) -> None:
        for task, run in route.loops().items():
            self.supervisor.start(task, run)

    def _stop_loops(self, route: Route) -> None:
        for task in route.loops():
            self.supervisor.stop(task)

    def _first(self) -> Route:
        return self.routes.first() or self.not_found

    @property
    def pool(self) -> Pool:
        """The first (in the single-service mode, the only) route's pool."""
        return self._first().pool

    @property
    def discovery(self) -> Discovery | None:
        return self._first().discovery

    @property
    def control(self) -> ControlLoop | None:
        return self._first().control

    def status(self) -> dict[str, object]:
        """/status: top-level `backends` and `replicas` are the first route's (as before routes)."""
        first = self._first()
        data: dict[str, object] = {"draining": self.draining, "backends": first.pool.status()}
        if first.control is not None:
            data["replicas"] = first.replicas_status()
        if first.discovery is not None:
            data["discovery"] = first.discovery.status()
        services = [r.status() for r in self.routes]
        if self.watcher is not None:
            data["watch"] = self.watcher.status()
            services += self.watcher.invalid_status()
        data["services"] = services
        for key, read in self.status_extra.items():
            data[key] = read()
        return data

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        self.proxy = Proxy(self.routes, self.not_found, clock=self.clock, upstream_timeout=config.upstream_timeout,
                           connect_timeout=config.connect_timeout, max_header_bytes=config.max_header_bytes,
                           idle_timeout=config.idle_timeout, log=self.log, body_timeout=config.body_timeout,
                           read_timeout=config.read_timeout, send_timeout=config.send_timeout,
                           tunnel_timeout=config.tunnel_timeout, stall_after=config.stall_after)
        try:
            self._server = await loop.create_server(self.proxy.protocol, config.listen.host, config.listen.port,
                                                    reuse_address=True, backlog=1024)
        except OSError as exc:   # taken, or not an address of this host: the user's to fix (exit 2)
            raise ConfigError(f"LB_LISTEN={config.listen}: cannot listen there ({exc.strerror or exc})") from None
        self.proxy_port = self._server.sockets[0].getsockname()[1]
        self._admin = web.AppRunner(make_app(self), access_log=None, handle_signals=False)
        await self._admin.setup()
        # aiohttp's own server has no timeout before a first request: its protocol runs behind a guard.
        self.admin_guard = AdminGuard(self._admin.server, config.admin_timeout)  # type: ignore[arg-type]
        try:
            self._admin_server = await loop.create_server(
                self.admin_guard.protocol, config.admin_listen.host, config.admin_listen.port, reuse_address=True)
        except OSError as exc:
            self._server.close()
            await self._admin.cleanup()
            raise ConfigError(f"LB_ADMIN_LISTEN={config.admin_listen}: cannot listen there "
                              f"({exc.strerror or exc})") from None
        self.admin_port = self._admin_server.sockets[0].getsockname()[1]
        self._started = True
        self.supervisor.start("sweep", self._sweep)
        for route in self.routes:
            self._start_loops(route)
        if self.watcher is not None:
            self.supervisor.start("watch:services", self.watcher.run)
        for i, factory in enumerate(self.background):
            self.supervisor.start(f"background:{i}", factory)
        self.log.info("listening", extra={"proxy": f"{config.listen.host}:{self.proxy_port}",
                                          "admin": f"{config.admin_listen.host}:{self.admin_port}",
                                          "backends": [b.address for b in self.pool.backends]})

    async def _sweep(self) -> None:
        # A tenth of the shortest timeout between looks: each fires at most 10% late (a stall, 25%).
        config = self.config
        pause = max(_SWEEP_MIN_S, min(_SWEEP_S, config.upstream_timeout / 10, config.stall_after / 4,
                                      config.idle_timeout / 10,
                                      config.body_timeout / 10, config.read_timeout / 10,
                                      config.send_timeout / 10, config.admin_timeout / 10,
                                      config.tunnel_timeout / 10))
        while True:
            await self.clock.sleep(pause)
            now = self.clock.now()
            if self.proxy is not None:
                self.proxy.sweep(now)
            if self.admin_guard is not None:
                self.admin_guard.sweep(now)

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight requests (bounded), then stop everything else."""
        if self.draining:
            return
        self.draining = True
        proxy = self.proxy
        if self._server is not None:
            self._server.close()
        if proxy is not None:
            proxy.draining = True
            proxy.close_idle()
            if busy := proxy.busy():
                self.log.info("draining", extra={"busy_connections": busy,
                                                 "timeout_s": self.config.drain_timeout})
                try:
                    await asyncio.wait_for(proxy.idle_event.wait(), self.config.drain_timeout)
                except TimeoutError:
                    self.log.warning("drain timeout; closing busy connections",
                                     extra={"busy_connections": proxy.busy()})
            proxy.abort_all()
        await self.supervisor.stop_all()
        for route in self.routes:
            for backend in route.pool.backends:
                for conn in list(backend.idle):
                    conn.close()
        if self._admin_server is not None:
            self._admin_server.close()
        if self._admin is not None:
            await self._admin.cleanup()
        for route in self.routes:
            if route.orchestrator is not None:
                await route.orchestrator.close()
        if self.watcher is not None:
            await self.watcher.catalog.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        self.log.info("stopped")

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then shut down gracefully."""
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stopped.wait()
        self.log.info("signal received; shutting down")
        await self.shutdown()
