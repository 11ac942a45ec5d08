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
from lb.proxy.headers import REASONS, Rejected, build_request, error_response
from lb.proxy.upstream import IDLE_S, PAUSE_BODY, PAUSE_UPSTREAM, WRITE_HIGH, WRITE_LOW, UpstreamConnection, close_stale

MAX_QUEUED = 32       # pipelined requests parsed ahead of the one in progress

if TYPE_CHECKING:
    from lb.routing.route import Route
    from lb.routing.table import RouteTable


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The framing field of a request's body (build_request accepted exactly one of them)."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return b"Transfer-Encoding: chunked"
        if lower == b"content-length":
            return b"Content-Length: " + value.strip()
    return b""


class Proxy:
    """What every client connection shares: the routes, settings, and the open connections."""

    def __init__(self, routes: RouteTable, not_found: Route, *, clock: Clock, upstream_timeout: float,
                 connect_timeout: float, max_header_bytes: int, idle_timeout: float, log: logging.Logger,
                 body_timeout: float = 60.0, read_timeout: float = 60.0, send_timeout: float = 60.0,
                 tunnel_timeout: float = 3600.0, stall_after: float = 2.0) -> None:
        self.routes = routes
        self.not_found = not_found      # the route of requests no rule matches: answered 404
        self.clock = clock
        self.upstream_timeout = upstream_timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self.idle_timeout = idle_timeout
        # Indexed by exchange.STALL_BODY, STALL_READ, STALL_SEND.
        self.timeouts = (0.0, body_timeout, read_timeout, send_timeout)
        self.tunnel_timeout = tunnel_timeout
        self.stall_after = stall_after
        self.tunnels_timed_out = 0
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
        """Time out requests whose backend owes a head too long, move those a frozen backend holds
        (Exchange.check_stalled), time out requests that stall once under way (a body
        that stops coming, a backend that stops sending, a client that stops reading); close idle
        keep-alive connections. A periodic sweep instead of a timer per request or read: the request
        path only sets flags.
        """
        timeout, idle_timeout = self.upstream_timeout, self.idle_timeout
        for conn in list(self.connections):
            queue = conn.queue
            if queue:
                exchange = queue[0]
                since = exchange.waiting_since()
                if since is None:
                    exchange.check_stall(now)
                elif now - since >= timeout:
                    exchange.timed_out()
                elif now - since >= self.stall_after:
                    exchange.check_stalled(now, since, self.stall_after)
            elif conn.tunnel is not None:
                # A tunnel's bytes only set a flag; a silent one (a client gone without a FIN) would
                # otherwise hold its backend, and keep the service from zero, for ever.
                if conn.tunnel_active:
                    conn.tunnel_active, conn.idle_since = False, now
                elif now - conn.idle_since >= self.tunnel_timeout:
                    self.tunnels_timed_out += 1
                    self.log.info("tunnel closed: no bytes either way", extra={
                        "client": conn.client_ip.decode(), "seconds": round(now - conn.idle_since, 1)})
                    conn.close()
            elif now - conn.idle_since >= idle_timeout:
                conn.close()
        for route in self.routes:
            for backend in route.pool.backends:
                if backend.idle:
                    close_stale(backend, now, self.upstream_idle_s)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


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
        self.idle_since = proxy.clock.now()   # since the last request ended, or a tunnel's last byte
        self.tunnel_active = False    # bytes went through the tunnel since the sweep last looked
        # A chunked body's trailer fields are counted against LB_MAX_HEADER_BYTES, never kept.
        self.chunk_head = False       # a chunk-size line with no data since: the last one, then trailers
        self.trailer_raw = 0          # raw bytes of whole reads spent in trailers (bounds a field never ended)
        self.chunks = 0               # chunk-size lines seen
        self.upgrading: Exchange | None = None   # a forwarded Upgrade request: tunnel bytes follow it
        self.upgrade_body = b""       # a dropped Upgrade's body framing: llhttp ended that message at its head
        self.continuing = False       # parsing a framing head made up for that body (see _after_upgrade)

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
            self.tunnel_active = True
            return
        # One pass per read; another only for what follows an Upgrade the proxy dropped (inlined:
        # this runs once per request).
        while not (self.pending_error or self.closing):
            if self.reading_head:
                if not self.head_bytes and not self.url:
                    self.count_head = False   # a head starting this read: its raw size bounds it
                self.head_bytes += len(data)
            in_trailer = self.chunk_head   # after a chunk-size line with no data: maybe the last one
            chunks = self.chunks
            try:
                self.parser.feed_data(data)
            except HttpParserUpgrade as upgrade:
                data = self._after_upgrade(data, upgrade.args[0])
                if data:
                    continue
            except HttpParserCallbackError as exc:
                context = exc.__context__
                self.fail(context.status if isinstance(context, Rejected) else 400)
            except HttpParserError as exc:
                self.fail(self._parse_error_status(exc))
            else:
                if self.reading_head:
                    if self.head_bytes > self.proxy.max_header_bytes:
                        self.fail(431)
                    elif self.url:
                        self._check_request_line(data)
                elif in_trailer and self.chunk_head and self.chunks == chunks:   # no data, no new chunk: trailers
                    self.trailer_raw += len(data)
                    if self.trailer_raw > self.proxy.max_header_bytes:
                        self.fail(431)
            return

    def _parse_error_status(self, exc: HttpParserError) -> int:
        if self.parser.get_http_version() == "2.0":
            return 505                # "PRI * HTTP/2.0": HTTP/2 with prior knowledge
        if "Transfer-Encoding` header value" in str(exc) and not any(
                n.lower() == b"transfer-encoding" for n, _ in self.headers):
            return 501                # `chunked, gzip`: a coding we do not know (a repeated field stays 400)
        return 400

    def _check_request_line(self, data: bytes) -> None:
        """A head still incomplete: a request line that ended without a version is HTTP/0.9 (400)."""
        if self.parser.get_http_version() != "0.0":
            return
        start = data.rfind(self.url)
        if start >= 0 and data.find(b"\n", start + len(self.url)) >= 0:
            self.fail(400)

    def _after_upgrade(self, data: bytes, offset: int) -> bytes:
        """llhttp stops at the end of an Upgrade request's head. A forwarded Upgrade: the rest is
        tunnel data. A dropped one (it has a body, or asks for h2c): the request goes on as a plain
        one, and the rest (its body, then what follows) is parsed afresh."""
        exchange, self.upgrading = self.upgrading, None
        if exchange is not None:
            if not exchange.finished:
                exchange.tunnel_data = data[offset:]
                self.pause(PAUSE_BODY)   # nothing but tunnel bytes may follow an Upgrade request
            return b""
        self.parser = HttpRequestParser(self)
        rest = data[offset:]
        framing, self.upgrade_body = self.upgrade_body, b""
        if framing:
            # Its body follows: a made-up head that frames it makes llhttp read it for this request.
            self.continuing = True
            rest = b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n" + rest
        return rest

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
        # Trailer fields land here too (after the head, self.headers is the next head's fresh list):
        # on_message_complete counts and drops them; _feed bounds the reads spent on them meanwhile.
        self.headers.append((name, value))

    def on_chunk_header(self) -> None:
        self.chunk_head = True
        self.chunks += 1

    def on_headers_complete(self) -> None:
        parser = self.parser
        if self.continuing:           # the made-up head framing a dropped Upgrade's body
            self.continuing = False
            self.reading_head = False
            self.head_bytes = 0
            self.url = b""
            self.headers = []
            return
        if self.count_head or self.head_bytes > self.proxy.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.proxy.max_header_bytes:
                raise Rejected(431)
        self.reading_head = False
        self.head_bytes = 0
        method = parser.get_method()
        http11 = parser.get_http_version() == "1.1"
        if not http11:
            version = parser.get_http_version()
            if version != "1.0":
                raise Rejected(505 if version >= "2" else 400)   # HTTP/2.0 in an HTTP/1 request line; 0.9
        headers = self.headers
        last = self.last_request
        if last is not None and last[0] == self.url and last[1] == headers and last[2] == method and last[3] == http11:
            req = last[4]   # a keep-alive client often sends the very same head again: reuse its rewrite
        else:
            if method == b"CONNECT":
                raise Rejected(405)   # a forward proxy's method: nginx refuses it too
            upgrade = parser.should_upgrade()
            req = build_request(method, self.url, headers, self.client_ip, upgrade, http11)
            if upgrade and not req.upgrade:
                # Upgrade dropped: llhttp will end this message at its head, so its body needs framing.
                self.upgrade_body = _body_framing(headers) if req.has_body else b""
                self.last_request = None
            else:
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
        if req.upgrade:
            self.upgrading = exchange
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
        self.chunk_head = False
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        if self.upgrade_body:         # a dropped Upgrade: llhttp ended it at its head, its body follows
            return
        if self.headers:              # a chunked body's trailers: counted, never forwarded or kept
            trailers, self.headers = self.headers, []
            if sum(len(n) + len(v) + 4 for n, v in trailers) > self.proxy.max_header_bytes:
                raise Rejected(431)
        exchange, self.parsing = self.parsing, None
        self.reading_head = True
        self.count_head = True   # a pipelined head may follow in this same read: count it exactly
        if self.chunk_head:
            self.chunk_head = False
            self.trailer_raw = 0
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
        self.idle_since = self.proxy.clock.now()
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
