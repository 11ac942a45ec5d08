"""A lean keep-alive HTTP/1.1 client: one connection per user, asyncio Protocol + httptools.

aiohttp's ClientSession spends most of its time in per-request machinery that a load generator does not need;
here a request is one bytes write and one future, and responses are parsed by llhttp in C.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import httptools

from loadtest.stats import RequestStats

USER_AGENT = "swarmscale-loadtest/0.1"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ResponseError(Exception):
    """A response that counts as a failure (status >= 400, or one a task marked failed)."""


class Response:
    """What a task sees of one response; mirrors the parts of locust's response people use."""

    __slots__ = ("status_code", "content", "url", "error", "request_meta", "_raw_headers", "_headers")

    def __init__(self, url: str) -> None:
        self.status_code = 0
        self.content = b""
        self.url = url
        self.error: BaseException | str | None = None
        self.request_meta: dict[str, Any] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: _Headers | None = None

    @property
    def headers(self) -> _Headers:
        # Built on first use: most tasks never read headers, and decoding them was 15% of a request's cost.
        if self._headers is None:
            self._headers = _Headers(self._raw_headers)
        return self._headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.error is None and 0 < self.status_code < 400

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.error is not None:
            raise self.error if isinstance(self.error, BaseException) else ResponseError(self.error)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining, like a browser or locust)."""

    __slots__ = ("transport", "parser", "waiter", "status", "headers", "body", "closed", "keep_alive",
                 "got_data")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.got_data = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if exc is None and waiter is not None and not waiter.done() and self._close_delimited():
            # A body with no length ends when the server closes (RFC 9112 6.3); httptools cannot be told EOF.
            self.status = self.parser.get_status_code()
            self.keep_alive = False
            waiter.set_result(None)
            return
        self._fail(exc or ConnectionResetError("connection closed by server"))

    def _close_delimited(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return bool(self.headers) and b"content-length" not in names and b"transfer-encoding" not in names

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def check_base_url(base_url: str) -> None:
    """Fail before the run, in one line, on a host this client cannot speak to."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"host must look like http://HOST[:PORT][/prefix], got {base_url!r} "
                         "(https is not supported)")


class HttpSession:
    """`self.client` of an HttpUser: get/post/put/delete/patch, each awaited, each logged to the stats."""

    def __init__(self, base_url: str, stats: RequestStats, timeout: float | None = 60.0) -> None:
        check_base_url(base_url)
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._host_header = parts.netloc
        self.stats = stats
        self.timeout = timeout
        self._conn: _Conn | None = None
        self._loop = asyncio.get_running_loop()
        self._head_cache: dict[tuple[str, str], bytes] = {}

    async def _connect(self, timeout: float | None) -> _Conn:
        # Bounded too: a host that drops SYNs would otherwise hold a user for the kernel's ~2 minutes.
        _, conn = await asyncio.wait_for(self._loop.create_connection(_Conn, self.host, self.port), timeout)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _head(self, method: str, path: str) -> bytes:
        key = (method, path)
        head = self._head_cache.get(key)
        if head is None:
            head = (f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                    f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n").encode("latin-1")
            if len(self._head_cache) < 1024:  # bounded: paths with ids must not grow memory forever
                self._head_cache[key] = head
        return head

    async def _send(self, method: str, path: str, headers: dict[str, str] | None, body: bytes | None,
                    resp: Response, timeout: float | None) -> None:
        head = self._head(method, path)
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        if body is not None:
            wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif method in ("POST", "PUT", "PATCH"):
            wire = head + b"Content-Length: 0\r\n\r\n"
        else:
            wire = head + b"\r\n"
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                return await self._exchange(conn, wire, resp, timeout)
            except OSError as exc:
                # A kept-alive connection the server closed as we reused it (idle timeout, a backend
                # leaving): nothing of an answer came back, so an idempotent request is sent once more on a
                # fresh connection, as browsers and urllib3 do. Anything else is the server's answer.
                if isinstance(exc, TimeoutError) or conn.got_data or method not in IDEMPOTENT:
                    raise
        conn = self._conn = await self._connect(timeout)
        await self._exchange(conn, wire, resp, timeout)

    async def _exchange(self, conn: _Conn, wire: bytes, resp: Response, timeout: float | None) -> None:
        waiter = conn.waiter = self._loop.create_future()
        conn.headers = []
        conn.body = []
        conn.got_data = False
        conn.transport.write(wire)  # type: ignore[union-attr]
        timer = self._loop.call_later(timeout, _expire, waiter) if timeout else None
        try:
            await waiter
        except BaseException:
            # The connection is in an unknown state (half a response, a cancelled wait): never reuse it.
            conn.close()
            self._conn = None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        resp.status_code = conn.status
        body_parts = conn.body
        resp.content = body_parts[0] if len(body_parts) == 1 else b"".join(body_parts)
        resp._raw_headers = conn.headers
        if not conn.keep_alive:
            conn.close()
            self._conn = None

    async def request(self, method: str, path: str, name: str | None = None, headers: dict[str, str] | None = None,
                      data: bytes | str | None = None, json: Any = None, catch_response: bool = False,
                      params: dict[str, Any] | str | None = None, timeout: float | None = None) -> Response:
        """One request, logged to the stats. Redirects are not followed (a 3xx is a success, as received)."""
        method = method.upper()
        if params:
            path += ("&" if "?" in path else "?") + (params if isinstance(params, str) else urlencode(params))
        if method == "HEAD":
            # httptools cannot be told a response has no body, so a HEAD answer would hang the connection.
            raise ValueError("HEAD requests are not supported")
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        elif isinstance(data, str):
            data = data.encode()
        resp = (CaughtResponse if catch_response else Response)(self.base_url + path)
        start = time.perf_counter()
        try:
            await self._send(method, path, headers, data, resp, timeout if timeout is not None else self.timeout)
        except (TimeoutError, OSError, httptools.HttpParserError, ConnectionError) as exc:
            resp.error = exc
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        stat_name = name or path
        if resp.error is None and resp.status_code >= 400:
            # Like FastHttpUser's LocustBadStatusCode(code=N): no URL in it, so failures group per (method, name).
            resp.error = f"BadStatusCode(code={resp.status_code})"
        length = len(resp.content)
        if catch_response:
            resp.request_meta = {"method": method, "name": stat_name, "response_time": elapsed_ms,
                                 "length": length}
            return resp
        # As in locust, a failed request counts as a request and as a failure.
        self.stats.log_request(method, stat_name, elapsed_ms, length)
        if resp.error is not None:
            self.stats.log_error(method, stat_name, resp.error)
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self._call("GET", path, kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self._call("POST", path, kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self._call("PUT", path, kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self._call("DELETE", path, kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self._call("PATCH", path, kw)

    def _call(self, method: str, path: str, kw: dict[str, Any]) -> Any:
        if kw.get("catch_response"):
            return _CatchResponse(self, method, path, kw)
        return self.request(method, path, **kw)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("request timed out"))


class _Headers(dict):
    """Case-insensitive enough: keys stored lower-case, looked up lower-case."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


class CaughtResponse(Response):
    """The response inside `async with client.get(..., catch_response=True) as r`: r.success() / r.failure()."""

    __slots__ = ("_outcome",)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._outcome: BaseException | str | None = None

    def success(self) -> None:
        self._outcome = "success"

    def failure(self, exc: BaseException | str) -> None:
        self._outcome = exc


class _CatchResponse:
    """locust's catch_response as an async context manager: the task decides what counts as a failure."""

    def __init__(self, session: HttpSession, method: str, path: str, kw: dict[str, Any]) -> None:
        self.session, self.method, self.path, self.kw = session, method, path, kw
        self.resp: CaughtResponse | None = None

    async def __aenter__(self) -> CaughtResponse:
        # request() built a CaughtResponse: catch_response is in kw.
        self.resp = cast(CaughtResponse, await self.session.request(self.method, self.path, **self.kw))
        return self.resp

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        resp = self.resp
        assert resp is not None
        meta = resp.request_meta
        stats = self.session.stats
        stats.log_request(meta["method"], meta["name"], meta["response_time"], meta["length"])
        outcome = resp._outcome
        if exc is not None:
            stats.log_error(meta["method"], meta["name"], exc)
            return isinstance(exc, ResponseError)  # locust swallows a ResponseError after recording it
        if outcome == "success":
            return False
        if outcome is not None:
            stats.log_error(meta["method"], meta["name"], outcome)
        elif resp.error is not None:
            stats.log_error(meta["method"], meta["name"], resp.error)
        return False

