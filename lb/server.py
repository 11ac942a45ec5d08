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
from lb.control import ControlLoop
from lb.discovery import Discovery, choose_orchestrator
from lb.orchestrators.base import Orchestrator
from lb.orchestrators.memory import MemoryOrchestrator
from lb.proxy.protocol import Proxy

_SWEEP_S = 0.5   # at most this long between looks for timed-out requests and idle connections
_SWEEP_MIN_S = 0.01


class Balancer:
    def __init__(self, config: Config, clock: Clock | None = None,
                 orchestrator: Orchestrator | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.log = logging.getLogger("lb")
        self.pool = Pool(self.clock, eject_after=config.eject_after, eject_base_s=config.eject_base,
                         retry_budget=config.retry_budget)
        if config.backends:
            self.pool.update(str(b) for b in config.backends)
        self.registry = CollectorRegistry()
        self.registry.register(PoolCollector(self.pool))
        self.status_extra: dict[str, Callable[[], object]] = {}
        self.background: list[Callable[[], Awaitable[None]]] = []
        self._wire_control(orchestrator)
        self.draining = False
        self.proxy: Proxy | None = None
        self.proxy_port = 0
        self.admin_port = 0
        self._server: asyncio.AbstractServer | None = None
        self._admin: web.AppRunner | None = None
        self._admin_server: asyncio.AbstractServer | None = None
        self.admin_guard: AdminGuard | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped: asyncio.Event | None = None

    def _wire_control(self, orchestrator: Orchestrator | None) -> None:
        """Collect -> decide -> act: discovery (Swarm mode) and the control loop, as background loops.

        Static LB_BACKENDS get an in-memory orchestrator that records what the policy wants.
        """
        if orchestrator is None:
            if self.config.swarm_mode:
                orchestrator = choose_orchestrator(self.config)
            else:
                orchestrator = MemoryOrchestrator([str(b) for b in self.config.backends])
        self.orchestrator = orchestrator
        self.discovery: Discovery | None = None
        if self.config.swarm_mode:
            self.discovery = Discovery(self.config, self.pool, orchestrator, self.clock)
            self.discovery.install(self)
        self.control = ControlLoop(self.config, self.pool, orchestrator, self.clock)
        self.control.install(self)

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        self.proxy = Proxy(self.pool, clock=self.clock, upstream_timeout=config.upstream_timeout,
                           connect_timeout=config.connect_timeout, max_header_bytes=config.max_header_bytes,
                           idle_timeout=config.idle_timeout, log=self.log, body_timeout=config.body_timeout,
                           read_timeout=config.read_timeout, send_timeout=config.send_timeout)
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
        self._tasks = [asyncio.create_task(self._sweep())]
        self._tasks += [asyncio.create_task(factory()) for factory in self.background]
        self.log.info("listening", extra={"proxy": f"{config.listen.host}:{self.proxy_port}",
                                          "admin": f"{config.admin_listen.host}:{self.admin_port}",
                                          "backends": [b.address for b in self.pool.backends]})

    async def _sweep(self) -> None:
        # A tenth of the shortest timeout between looks: each fires at most 10% late.
        config = self.config
        pause = max(_SWEEP_MIN_S, min(_SWEEP_S, config.upstream_timeout / 10, config.idle_timeout / 10,
                                      config.body_timeout / 10, config.read_timeout / 10,
                                      config.send_timeout / 10, config.admin_timeout / 10))
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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for backend in self.pool.backends:
            for conn in list(backend.idle):
                conn.close()
        if self._admin_server is not None:
            self._admin_server.close()
        if self._admin is not None:
            await self._admin.cleanup()
        if self.orchestrator is not None:
            await self.orchestrator.close()
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
