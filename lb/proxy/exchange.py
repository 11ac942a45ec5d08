"""One request and its response, from the client's parse to the backend and back.

Callbacks only, no task per request (a task is made only to open a new backend connection):
that is what keeps the proxy within reach of nginx. The client connection runs exchanges one at
a time, in order, which is what answers pipelined requests in order.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lb.proxy.headers import REASONS, RequestHead, error_response, rewrite_response, strip_length
from lb.proxy.upstream import PAUSE_BODY, PAUSE_UPSTREAM, UpstreamConnection

if TYPE_CHECKING:
    from lb.collect.backend import Backend
    from lb.collect.pool import Attempt
    from lb.proxy.protocol import ClientConnection
    from lb.routing.route import Route

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
REPLAY_MAX = 64 * 1024       # request bodies up to this size are kept so the request can be retried
BUFFER_MAX = 256 * 1024      # body buffered while no backend is connected; past it, stop reading
MAX_ATTEMPTS = 3
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# What an exchange in progress may be stalled on (Proxy.timeouts is indexed by these).
STALL_BODY = 1    # the client stopped sending its body (LB_BODY_TIMEOUT; 408, not the backend's fault)
STALL_READ = 2    # the backend stopped sending its response or taking the body (LB_READ_TIMEOUT)
STALL_SEND = 3    # the client stopped reading the response (LB_SEND_TIMEOUT; cut, not the backend's fault)


class Exchange:
    # Defaults live on the class: a request only pays for the fields it changes.
    body_bytes = 0
    replay = True
    request_done = False
    upstream: UpstreamConnection | None = None
    backend: Backend | None = None
    attempt: Attempt | None = None   # the open try on `backend`: its accounting, ended once
    tried: tuple = ()
    response_started = False
    sent_at = 0.0                    # when the request was all sent: the upstream timeout runs from here
    finished = False
    status = 0
    rechunk = False                  # a close-delimited body, chunked by us for an HTTP/1.1 client
    close_delimited = False
    no_body = False
    close_after = False
    retrying = False
    was_held = False                 # waited in the hold queue: now it may go back to a backend it tried
    tunnel_data = b""                # bytes the client sent after an Upgrade request
    upstream_keep_alive = False
    head_out: list[bytes] | None = None   # response head held back to share a write with the body
    route: Route                     # set by the client connection: whose pool serves this request
    unmatched: tuple[str, str] | None = None   # (host, path) of a request no route matched
    stall_kind = 0                   # STALL_* seen by the last sweep, since stall_from
    stall_from = 0.0
    stall_size = 0                   # at the last sweep: a write buffer's size (smaller: progress) or a byte count

    def __init__(self, client: ClientConnection, method: bytes, req: RequestHead, keep_alive: bool,
                 http11: bool) -> None:
        self.client = client
        self.method = method
        self.req = req
        self.keep_alive = keep_alive
        self.http11 = http11
        self.body: list[bytes] = []       # body not yet sent, plus (while replayable) what was sent
        self.expect_continue = req.expect_continue and http11

    # --- from the client -----------------------------------------------------------------------
    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        if self.req.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._send(data)

    def request_complete(self) -> None:
        if self.finished:
            return
        if self.req.chunked:
            self._send(b"0\r\n\r\n")
        self.request_done = True
        if self.req.has_body:   # a bodiless request was sent when it started (see start)
            self.sent_at = self.client.proxy.clock.now()

    def _send(self, data: bytes) -> None:
        self.body_bytes += len(data)
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.write(data)  # type: ignore[union-attr]
            if self.replay:
                if self.body_bytes > REPLAY_MAX:
                    self.replay = False
                    self.body = []
                else:
                    self.body.append(data)
        else:
            self.body.append(data)
            if self.body_bytes > REPLAY_MAX:
                self.replay = False
            if self.body_bytes > BUFFER_MAX:
                self.client.pause(PAUSE_BODY)

    # --- choosing a backend --------------------------------------------------------------------
    def start(self) -> None:
        client = self.client
        route = self.route
        if route.not_found:
            self._not_found()
            return
        pool = route.pool
        backend = pool.pick(self.tried)
        if backend is None and self.tried and self.was_held:
            backend = pool.pick()   # the hold found a backend to connect to: it may be one tried before
        if backend is None:
            # No serving backend: wait in the route's hold queue. Fresh requests do at zero replicas
            # or with every backend draining or ejected. One that failed on the only backend(s) it had
            # does too where discovery can bring a new one: the one task a kill took, which Swarm
            # replaces; a static backend list cannot change, so there it gets its 502.
            hold = pool.hold
            if hold is not None and (not self.tried or route.discovery is not None) and hold.hold(self):
                self.was_held = True
                if self.retrying:   # a held request is in flight as held, not as a retry in progress
                    self.retrying = False
                    pool.retry_done()
                return
            self._unrouted(502 if self.tried else 503)
            return
        self.backend = backend
        self.attempt = attempt = pool.attempt(backend)
        if not self.req.has_body or self.request_done:
            self.sent_at = attempt.started
        idle = backend.idle   # LIFO keeps the pool small and warm; closing takes a connection out
        if idle:
            self.attach(idle.pop())
        else:
            client.proxy.loop.create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        proxy = self.client.proxy
        try:
            _, conn = await asyncio.wait_for(
                proxy.loop.create_connection(lambda: UpstreamConnection(backend, proxy.max_header_bytes),
                                             backend.host, backend.port),
                proxy.connect_timeout)
        except (TimeoutError, OSError) as exc:
            if not backend.consecutive_failures:   # one line per failure streak, not one per request
                proxy.log.warning("backend connect failed",
                                  extra={"backend": backend.address, "error": repr(exc)})
            if self.finished:           # the client left; abort() already ended the accounting
                self.route.pool.failure(backend)
                return
            self._try_another(backend)  # nothing was sent: any method may go elsewhere
            return
        if self.finished:               # the client left while we connected: keep the connection
            conn.release(True)
            return
        self.attach(conn)

    def attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.exchange = self
        conn.used = True
        client = self.client
        if self.expect_continue and not self.request_done:
            self.expect_continue = False
            client.transport.write(_CONTINUE)
        head = self.req.head
        if not self.req.has_host:   # HTTP/1.1 to the backend needs a Host
            head = head[:-2] + b"Host: " + conn.backend.address.encode() + b"\r\n\r\n"
        if self.body:
            conn.transport.writelines([head, *self.body])  # type: ignore[union-attr]
            if not self.replay:
                self.body = []
            client.resume(PAUSE_BODY)
        else:
            conn.transport.write(head)  # type: ignore[union-attr]
        if client.write_paused:
            conn.pause_reading()

    def waiting_since(self) -> float | None:
        """When the backend began to owe a response head, or None if it does not owe one."""
        if self.upstream is None or not self.request_done or self.response_started or self.finished:
            return None
        return self.sent_at

    def timed_out(self) -> None:
        """No response head within LB_UPSTREAM_TIMEOUT (the proxy's sweep calls this)."""
        if self.response_started or self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._end(504, failed=True)
        self.respond_error(504)

    def check_stalled(self, now: float, since: float, stall_after: float) -> None:
        """The backend has owed the head since `since`, past LB_STALL_AFTER (the sweep calls this).

        A frozen backend (a paused container, a deadlocked worker) keeps its connections open and
        answers nothing, so its requests would wait for LB_UPSTREAM_TIMEOUT. Once the pool judges it
        stalled (Pool.stalled), an unanswered idempotent request goes to another backend, as nginx's
        proxy_next_upstream does on a timeout.
        """
        backend, conn = self.backend, self.upstream
        if backend is None or conn is None or not self._replayable(conn):
            return
        if not self.route.pool.stalled(backend, now, since, stall_after):
            return
        first = not backend.consecutive_failures   # one line per stalled backend, not one per request
        if self._retry_elsewhere(backend, conn) and first:
            self.client.proxy.log.warning("backend stalled: its requests are retried elsewhere", extra={
                "backend": backend.address, "waited_s": round(now - since, 3)})

    def _replayable(self, conn: UpstreamConnection) -> bool:
        """Sent, unanswered, idempotent and kept whole: it may go to another backend."""
        return (not conn.got_bytes and self.method in IDEMPOTENT and self.replay
                and (self.request_done or not self.req.has_body))

    def _retry_elsewhere(self, backend: Backend, conn: UpstreamConnection) -> bool:
        """Give up on `conn` and try another backend, if the pool's retry rules allow one more."""
        if not (self.retrying or self.route.pool.try_retry(backend)):
            return False
        if self.upstream is conn:
            self.upstream = None
            conn.close()
        self.retrying = True
        self._try_another(backend)
        return True

    # --- from the backend ----------------------------------------------------------------------
    def response_head(self, status: int, upstream_keep_alive: bool, raw_head: bytes) -> None:
        """The final response's head (the upstream connection drops 1xx other than 101)."""
        conn = self.upstream
        if conn is not None and raw_head == conn.last_head:
            # A backend tends to send the same head again (Date changes once a second): reuse it.
            head, has_length, chunked, upgrade_to = conn.last_rewrite
        else:
            rewritten = rewrite_response(raw_head)
            head, has_length, chunked, upgrade_to = rewritten
            if conn is not None:
                conn.last_head, conn.last_rewrite = raw_head, rewritten
        if chunked is None or (status == 101 and not self.req.upgrade):
            # Framing we cannot relay faithfully, or a switch of protocols nobody asked for: 502.
            self.upstream_broken()
            return
        self.response_started = True
        self.status = status
        self.upstream_keep_alive = upstream_keep_alive
        parts = [head, b"\r\n"]
        client = self.client
        if status == 101:
            parts.append(b"Connection: upgrade\r\n")
            if upgrade_to is not None:
                parts += (b"Upgrade: ", upgrade_to, b"\r\n")
            parts.append(b"\r\n")
            client.transport.writelines(parts)
            return
        self.no_body = self.method == b"HEAD" or status == 204 or status == 304
        if status == 204 and has_length:
            parts[0] = strip_length(head)
        close = (not self.keep_alive or client.proxy.draining
                 or (self.req.has_body and not self.request_done) or self.req.upgrade)
        if not self.no_body:
            if not chunked and not has_length:
                # Ends when the backend closes: chunk it for HTTP/1.1 clients, close for 1.0.
                self.close_delimited = True
                if self.http11:
                    self.rechunk = chunked = True
                else:
                    close = True
            if chunked:   # the backend's chunks pass through as they are
                parts.append(b"Transfer-Encoding: chunked\r\n")
        if close:
            parts.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.close_after = close
        # Held back until the end of this read, so head and body leave in one write (one syscall).
        self.head_out = parts
        if self.method == b"HEAD" and conn is not None:
            # llhttp would wait for the body Content-Length announces: the message ends here,
            # once this read is parsed (anything after the head is a broken backend's).
            conn.ended = 1

    def flush_head(self) -> None:
        out, self.head_out = self.head_out, None
        if out:
            self.client.transport.write(b"".join(out))   # one small buffer beats a writev of many

    def relay(self, data: bytes) -> None:
        """Body bytes from the backend, framing included: to the client, behind the head if pending."""
        if self.finished or self.no_body or not self.response_started:
            return
        if not data:
            if self.head_out is not None:
                self.flush_head()
            return
        if self.rechunk:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._write(data)

    def _write(self, data: bytes) -> None:
        out = self.head_out
        if out is None:
            self.client.transport.write(data)
        else:
            self.head_out = None
            out.append(data)
            self.client.transport.write(b"".join(out))

    def response_complete(self) -> None:
        """The response ended: at its framed end, or (close-delimited) when the backend closed."""
        if self.finished or not self.response_started or self.status == 101:
            return
        if self.rechunk:
            self._write(b"0\r\n\r\n")
        elif self.head_out is not None:
            self.flush_head()
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.release(self.request_done and self.upstream_keep_alive and not self.close_delimited)
        self._end(self.status, failed=False)
        self._done(self.close_after)

    def upstream_upgraded(self, rest: bytes) -> None:
        """The backend switched protocols: from now on bytes flow both ways untouched."""
        conn = self.upstream
        if conn is None or self.status != 101:
            self.upstream_broken()
            return
        client = self.client
        self._end(101, failed=False)
        self.finished = True
        self.upstream = None
        conn.exchange = None
        conn.tunnel = client
        if rest:
            client.transport.write(rest)
        client.start_tunnel(conn, self.tunnel_data)

    def upstream_broken(self) -> None:
        conn = self.upstream
        if conn is not None:
            conn.close()
            self.upstream_lost(conn)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The backend closed or reset the connection while this exchange used it."""
        if self.finished:
            return
        self.upstream = None
        conn.exchange = None
        if self.response_started and self.head_out is not None and not self.close_delimited:
            # Nothing reached the client yet (the head waits for the end of the read): answer 502.
            self.response_started = False
            self.head_out = None
        if self.response_started:
            if self.close_delimited:    # the close was the end of the body
                self.close_after = self.close_after or not self.rechunk
                self.response_complete()
            else:                       # truncated mid-response: the client must see it too
                self.flush_head()
                self._end(self.status, failed=True)
                self.finished = True
                self.client.abort()
            return
        if self.req.has_body and not self.request_done:
            # The body was still coming: a backend giving up on a slow client is not a broken one.
            self._end(502, failed=None)
            self.respond_error(502)
            return
        backend = self.backend
        if backend is not None and self._replayable(conn) and self._retry_elsewhere(backend, conn):
            return   # sent but unanswered: an idempotent request may be tried once more, elsewhere
        self._end(502, failed=True)
        self.respond_error(502)

    def _try_another(self, backend: Backend) -> None:
        """An attempt on `backend` failed before any answer: try another backend, or give up."""
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.abandon(failed=True)
        self.tried += (backend,)
        self.backend = None
        if len(self.tried) < MAX_ATTEMPTS:
            self.start()
        else:
            self._unrouted(502)

    def _unrouted(self, status: int) -> None:
        """No backend (left) to try: the proxy answers alone."""
        self._end(status, failed=False)   # holds no backend here: this only gives back a retry slot
        self.route.pool.unrouted(status)
        self.respond_error(status)

    def unhold(self, status: int) -> None:
        """A held request answered by the balancer alone: its start failed (503) or it waited too long (504)."""
        self._unrouted(status)

    def _not_found(self) -> None:
        """No route matches: 404, with a one-line body naming the host and path."""
        self.route.pool.unrouted(404)
        host, path = self.unmatched or ("", "")
        body = f"no route for host {host or '(none)'} and path {path}\n".encode("latin-1", "replace")
        close = not self.keep_alive or (self.req.has_body and not self.request_done) or self.req.upgrade
        self.client.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                                    b"Content-Length: %d\r\n%s\r\n%s"
                                    % (len(body), b"Connection: close\r\n" if close else b"", body))
        self._done(close)

    # --- stalls (the sweep calls this for the exchange in progress when no head is owed) ---------
    def check_stall(self, now: float) -> None:
        """Time out a request that makes no progress: the timer is the sweep, a read only sets a flag."""
        if self.finished:
            return
        client = self.client
        conn = self.upstream
        if self.response_started:
            if client.write_paused:
                kind = STALL_SEND
                size = client.transport.get_write_buffer_size()
                moved = size < self.stall_size
                self.stall_size = size
            elif conn is not None:
                kind = STALL_READ
                moved = conn.body_seen != self.stall_size   # a read relays body: the count moves
                self.stall_size = conn.body_seen
            else:
                return
        elif self.req.has_body and not self.request_done:
            if client.paused & PAUSE_UPSTREAM and conn is not None and conn.transport is not None:
                kind = STALL_READ        # the backend does not take the body
                size = conn.transport.get_write_buffer_size()
                moved = size < self.stall_size
                self.stall_size = size
            elif client.paused:          # buffered while a backend connects (LB_CONNECT_TIMEOUT)
                self.stall_kind = 0
                return
            else:
                kind = STALL_BODY
                moved = self.body_bytes != self.stall_size   # a read of the body adds to it
                self.stall_size = self.body_bytes
        else:
            return
        if moved or kind != self.stall_kind:
            self.stall_kind = kind
            self.stall_from = now
        elif now - self.stall_from >= client.proxy.timeouts[kind]:
            self.stalled(kind)

    def stalled(self, kind: int) -> None:
        client = self.client
        if kind == STALL_SEND:           # the client's doing: cut it (abort() ends the accounting)
            client.abort()
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        if kind == STALL_BODY:           # nginx's client_body_timeout: 408, and the backend is not to blame
            self._end(408, failed=None)
            self.respond_error(408)
        elif self.response_started:      # the backend stopped mid-response: cut the client too
            self.flush_head()
            self._end(self.status, failed=True)
            self.finished = True
            client.abort()
        else:
            self._end(504, failed=True)
            self.respond_error(504)

    # --- ending --------------------------------------------------------------------------------
    def _end(self, status: int, failed: bool | None) -> None:
        attempt = self.attempt
        if attempt is not None:
            self.attempt = self.backend = None
            attempt.end(status, failed)
        if self.retrying:
            self.retrying = False
            self.route.pool.retry_done()

    def respond_error(self, status: int) -> None:
        if self.finished:
            return
        close = not self.keep_alive or (self.req.has_body and not self.request_done) or self.req.upgrade
        self.client.transport.write(error_response(status, REASONS[status], close,
                                                   retry_after=1 if status == 503 else None))
        self._done(close)

    def _done(self, close: bool) -> None:
        self.finished = True
        self.body = []
        self.client.exchange_done(self, close)

    def abort(self) -> None:
        """The client went away: free the backend side."""
        if self.finished:
            return
        self.finished = True
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._end(499, failed=None)   # the client's doing: no failure, no latency
