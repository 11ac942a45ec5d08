"""The admin port (aiohttp): /healthz, /metrics, /status.

/healthz is open (orchestrators probe it); /status and /metrics want `Authorization: Bearer
<LB_ADMIN_TOKEN>` when that is set. Connections are guarded (AdminGuard): one silent for
LB_ADMIN_TIMEOUT, or that takes longer to send a request head, is closed, and at most
MAX_ADMIN_CONNECTIONS are open at once, so idle admin sockets cannot use up the descriptors
the proxy needs for its clients.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from lb.server import Balancer

MAX_ADMIN_CONNECTIONS = 256
_OPEN = frozenset(("/healthz",))


def make_app(balancer: Balancer) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if balancer.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(balancer.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(balancer.status())

    expected = f"Bearer {balancer.config.admin_token}".encode()

    @web.middleware
    async def bearer(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path not in _OPEN:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="bearer token required\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="swarmscale"'})
        return await handler(request)

    app = web.Application(middlewares=[bearer] if balancer.config.admin_token else [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    return app


class AdminGuard:
    """The admin connections, timed by the balancer's sweep (no timer per connection)."""

    def __init__(self, factory: Callable[[], Any], timeout: float) -> None:
        self.factory = factory           # aiohttp's web.Server: makes a RequestHandler per connection
        self.timeout = timeout
        self.connections: set[_Guarded] = set()

    def protocol(self) -> _Guarded:
        return _Guarded(self, self.factory())

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            conn.check(now, self.timeout)


class _Guarded(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, noting when bytes arrive and heads end."""

    def __init__(self, guard: AdminGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.active = True
        self.since: float | None = None    # first sweep that saw it silent
        self.in_head = False               # a request head has begun and not ended
        self.head_from: float | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.guard.connections) >= MAX_ADMIN_CONNECTIONS:
            transport.abort()  # type: ignore[attr-defined]
            return
        self.guard.connections.add(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.active = True
        seen = self.tail + data
        if not self.in_head:
            self.in_head, self.head_from = True, None
        if b"\r\n\r\n" in seen:
            # The last head in this read may have begun after the end found: count it from here.
            self.in_head = not seen.endswith(b"\r\n\r\n")
            self.head_from = None
        self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.guard.connections:
            self.guard.connections.discard(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def check(self, now: float, timeout: float) -> None:
        if self.active:
            self.active, self.since = False, now
        if self.in_head and self.head_from is None:
            self.head_from = now
        silent = self.since is not None and now - self.since >= timeout
        slow_head = self.in_head and self.head_from is not None and now - self.head_from >= timeout
        if (silent or slow_head) and self.transport is not None:
            self.transport.abort()
