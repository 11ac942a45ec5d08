"""The client side: an asyncio Protocol per client connection, parsing with llhttp (httptools).

Requests are parsed as they arrive and queued; the head of the queue is the one exchange talking
to a backend, so pipelined requests are answered in order. Reading from the client pauses while
the backend cannot take more body, or too much is queued (backpressure both ways).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from lb.clock import Clock
from lb.proxy.exchange import Exchange
from lb.proxy.headers import REASONS, build_request, error_response
from lb.proxy.upstream import IDLE_S, PAUSE_BODY, PAUSE_UPSTREAM, WRITE_HIGH, WRITE_LOW, UpstreamConnection, close_stale

MAX_QUEUED = 32       # pipelined requests parsed ahead of the one in progress

if TYPE_CHECKING:
    from lb.routing.route import Route
    from lb.routing.table import RouteTable


class Proxy:
    """What every client connection shares: the routes, settings, and the open connections."""

    def __init__(self, routes: RouteTable, not_found: Route, *, clock: Clock, upstream_timeout: float,
                 connect_timeout: float,
                 max_header_bytes: int, idle_timeout: float, log: logging.Logger) -> None:
        self.routes = routes
        self.not_found = not_found      # the route of requests no rule matches: answered 404
        self.clock = clock
        self.upstream_timeout = upstream_timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self.idle_timeout = idle_timeout
        self.upstream_idle_s = IDLE_S
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.idle_event = asyncio.Event()   # set when no connection has a request in progress

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    def busy(self) -> int:
        return sum(1 for c in self.connections if c.queue)

    def close_idle(self) -> None:
        """Close every connection with no request in progress (shutdown; the sweep ages them out)."""
        for conn in list(self.connections):
            if not conn.queue and conn.tunnel is None:
                conn.close()

    def sweep(self, now: float) -> None:
        """Time out requests whose backend owes a head too long; close idle keep-alive connections.

        A periodic sweep instead of a timer per request: the request path pays nothing for it.
        """
        timeout, idle_timeout = self.upstream_timeout, self.idle_timeout
        for conn in list(self.connections):
            queue = conn.queue
            if queue:
                since = queue[0].waiting_since()
                if since is not None and now - since >= timeout:
                    queue[0].timed_out()
            elif conn.tunnel is None and now - conn.idle_since >= idle_timeout:
                conn.close()
        for route in self.routes:
            for backend in route.pool.backends:
                if backend.idle:
                    close_stale(backend, now, self.upstream_idle_s)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


class _HeadTooLarge(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.client_ip = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.reading_head = True
        self.count_head = False
        self.paused = 0               # PAUSE_* reasons, or-ed
        self.write_paused = False
        self.closed = False
        self.closing = False
        self.pending_error = 0        # a malformed request after pipelined ones: answer it in turn
        self.tunnel: UpstreamConnection | None = None
        self.last_request: tuple | None = None   # (url, headers, method, http11, RequestHead)
        self.idle_since = proxy.clock.now()

    # --- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if peer else "").encode()
        self.proxy.connections.add(self)
        if self.proxy.draining:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)  # type: ignore[union-attr]
            return
        if self.pending_error or self.closing:
            return
        if self.reading_head:
            if not self.head_bytes:
                self.count_head = False   # a head starting this read: its raw size bounds it
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            exchange = self.queue[-1] if self.queue else None
            if exchange is not None and exchange.req.upgrade:
                exchange.tunnel_data = data[upgrade.args[0]:]
                self.pause(PAUSE_BODY)   # nothing but tunnel bytes may follow an Upgrade request
            else:
                self.fail(400)           # CONNECT, or an upgrade we cannot forward
        except HttpParserCallbackError as exc:
            self.fail(431 if isinstance(exc.__context__, _HeadTooLarge) else 400)
        except HttpParserError:
            self.fail(400)
        else:
            if self.reading_head and self.head_bytes > self.proxy.max_header_bytes:
                self.fail(431)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        for exchange in self.queue:
            exchange.abort()
        self.queue.clear()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        self._maybe_idle()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.resume_reading()

    # --- llhttp callbacks ----------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        if self.count_head or self.head_bytes > self.proxy.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.proxy.max_header_bytes:
                raise _HeadTooLarge()
        self.reading_head = False
        self.head_bytes = 0
        method = parser.get_method()
        http11 = parser.get_http_version() == "1.1"
        headers = self.headers
        last = self.last_request
        if last is not None and last[0] == self.url and last[1] == headers and last[2] == method and last[3] == http11:
            req = last[4]   # a keep-alive client often sends the very same head again: reuse its rewrite
        else:
            req = build_request(method, self.url, headers, self.client_ip, parser.should_upgrade(), http11)
            self.last_request = (self.url, headers, method, http11, req)
        exchange = Exchange(self, method, req, parser.should_keep_alive(), http11)
        routes = self.proxy.routes
        route = routes.single
        if route is None:   # several routes: look the request up (one catch-all route needs no look)
            route, host, path = routes.match_request(self.url, headers)
            if route is None:
                route = self.proxy.not_found
                exchange.unmatched = (host, path)
        exchange.route = route
        self.parsing = exchange
        self.url = b""            # ready for the next head (no on_message_begin: one call fewer)
        self.headers = []
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            exchange.start()
        elif len(queue) > MAX_QUEUED:
            self.pause(PAUSE_BODY)

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        exchange, self.parsing = self.parsing, None
        self.reading_head = True
        self.count_head = True   # a pipelined head may follow in this same read: count it exactly
        if exchange is not None:
            exchange.request_complete()

    # --- flow control --------------------------------------------------------------------------
    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    # --- exchanges -----------------------------------------------------------------------------
    def exchange_done(self, exchange: Exchange, close: bool) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        elif exchange in queue:
            queue.remove(exchange)
        if self.paused:
            self.resume(PAUSE_UPSTREAM)
        if close or self.closed:
            self.close()
            return
        if queue:
            queue[0].start()
            if len(queue) <= MAX_QUEUED and self.parsing is None:
                self.resume(PAUSE_BODY)
            return
        if self.pending_error:
            self._send_error(self.pending_error)
            return
        proxy = self.proxy
        self.idle_since = exchange.route.pool.changed_at   # the clock's time of this very request's end
        if proxy.draining:
            self.close()
            self._maybe_idle()
            return
        if self.paused:
            self.resume(PAUSE_BODY)

    def _maybe_idle(self) -> None:
        proxy = self.proxy
        if proxy.draining and not any(c.queue for c in proxy.connections):
            proxy.idle_event.set()

    def fail(self, status: int) -> None:
        """A request we cannot parse: answer once those before it are answered, then close."""
        self.pause(PAUSE_BODY)
        if self.parsing is not None and self.parsing in self.queue:
            # The broken request is the one being read: the ones before it still get answers.
            exchange = self.parsing
            self.parsing = None
            exchange.abort()
            self.queue.remove(exchange)
        self.pending_error = status
        if not self.queue:
            self._send_error(status)

    def _send_error(self, status: int) -> None:
        self.transport.write(error_response(status, REASONS[status], close=True))
        self.close()

    def start_tunnel(self, upstream: UpstreamConnection, early: bytes) -> None:
        """After 101: bytes flow both ways untouched until either side closes."""
        self.tunnel = upstream
        self.queue.clear()
        self.parsing = None
        if early:
            upstream.transport.write(early)  # type: ignore[union-attr]
        self.paused = 0
        self.transport.resume_reading()
        if self.write_paused:
            upstream.pause_reading()
        self._maybe_idle()

    def close(self) -> None:
        """Close once what was written is flushed."""
        if not self.closing:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()
