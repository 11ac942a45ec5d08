"""A lean keep-alive HTTP/1.1 client: one connection per user and origin, asyncio Protocol + httptools.

aiohttp's ClientSession spends most of its time in per-request machinery that a load generator does not need;
here a request is one bytes write and one future, and responses are parsed by llhttp in C. What a locust user
relies on is kept: a cookie jar and session headers per user, redirects followed, HEAD, https with
certificate checks, `elapsed`, and a blocking mode for plain `def` tasks run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json as jsonlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, cast
from urllib.parse import urlencode, urljoin, urlsplit

import httptools

from loadtest.stats import RequestStats

USER_AGENT = "swarmscale-loadtest/0.1"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 30  # requests' default, which locust's HttpUser follows
# Options of requests/locust that this client does not implement: a clear TypeError, never silently ignored.
UNSUPPORTED = frozenset({"files", "stream", "cert", "proxies", "hooks"})


class ResponseError(Exception):
    """A response that counts as a failure (status >= 400, or one a task marked failed)."""


class CatchResponseError(ResponseError):
    """locust's name for a failure a task marked with resp.failure()."""


class CaseInsensitiveDict(MutableMapping[str, str]):
    """Header names compared case-insensitively, spelled as first set (as requests' CaseInsensitiveDict)."""

    def __init__(self, data: Any = None, **kw: str) -> None:
        self._store: dict[str, tuple[str, str]] = {}
        self.update(data or {}, **kw)

    def __setitem__(self, key: str, value: str) -> None:
        self._store[key.lower()] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._store[key.lower()][1]

    def __delitem__(self, key: str) -> None:
        del self._store[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._store

    def __repr__(self) -> str:
        return repr(dict(self.items()))


_NO_HISTORY: list[Response] = []
_UNSET: Any = object()


class Response:
    """What a task sees of one response; mirrors the parts of locust's (requests') response people use."""

    __slots__ = ("status_code", "content", "url", "error", "request_meta", "_raw_headers", "_headers",
                 "_elapsed", "history", "request_method", "_js")

    def __init__(self, url: str) -> None:
        self.status_code = 0
        self.content = b""
        self.url = url
        self.error: BaseException | str | None = None
        self.request_meta: dict[str, Any] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: CaseInsensitiveDict | None = None
        self._elapsed = 0.0
        self.history: list[Response] = _NO_HISTORY  # replaced by a list of its own on the first redirect
        self.request_method = "GET"
        self._js: Any = _UNSET

    @property
    def headers(self) -> CaseInsensitiveDict:
        # Built on first use: most tasks never read headers, and decoding them was 15% of a request's cost.
        if self._headers is None:
            h = CaseInsensitiveDict()
            for k, v in self._raw_headers:
                name, value = k.decode("latin-1"), v.decode("latin-1")
                h[name] = f"{h[name]}, {value}" if name in h else value
            self._headers = h
        return self._headers

    @property
    def elapsed(self) -> datetime.timedelta:
        """Time from sending the request to the end of the answer (of the last hop when redirected)."""
        return datetime.timedelta(seconds=self._elapsed)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.error is None and 0 < self.status_code < 400

    @property
    def reason(self) -> str:
        from http import HTTPStatus

        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def cookies(self) -> dict[str, str]:
        return {name: value for name, value, _ in _set_cookies(self._raw_headers)}

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def js(self) -> Any:
        """FastHttpUser's parsed JSON body, None when the body is not JSON."""
        if self._js is not _UNSET:
            return self._js
        try:
            return self.json()
        except ValueError:
            return None

    @js.setter
    def js(self, value: Any) -> None:
        self._js = value

    def raise_for_status(self) -> None:
        if self.error is not None:
            raise self.error if isinstance(self.error, BaseException) else ResponseError(self.error)

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining, like a browser or locust)."""

    __slots__ = ("transport", "parser", "waiter", "status", "headers", "body", "closed", "keep_alive",
                 "got_data", "head", "reset")

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
        self.head = False   # the request in flight is a HEAD: its answer ends with its headers
        self.reset = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
        if self.reset:
            # llhttp cannot be told a response has no body: after a HEAD answer it would wait for one, so the
            # connection gets a fresh parser for the next response.
            self.reset = False
            self.parser = httptools.HttpResponseParser(self)

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

    def on_headers_complete(self) -> None:
        if self.head:
            self.status = self.parser.get_status_code()
            self.keep_alive = self.parser.should_keep_alive()
            self.reset = True
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.head:
            return
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
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"host must look like http(s)://HOST[:PORT][/prefix], got {base_url!r}")


def connect_address(hostname: str) -> str:
    """`*.localhost` is loopback (RFC 6761) even where the resolver does not know it, so a user class can
    name `http://vote.localhost:8080` and reach 127.0.0.1 with that Host header."""
    name = hostname.lower().rstrip(".")
    return "127.0.0.1" if name == "localhost" or name.endswith(".localhost") else hostname


class _Origin:
    """Where one scheme://host:port is reached and what its requests carry."""

    __slots__ = ("scheme", "hostname", "address", "port", "host_header", "tls", "conn", "key")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme or "http"
        self.hostname = parts.hostname or "127.0.0.1"
        self.address = connect_address(self.hostname)
        self.tls = self.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rpartition("@")[2]
        self.key = (self.scheme, self.hostname, self.port)
        self.conn: _Conn | None = None


class CookieJar:
    """The user's cookies: set by responses (Set-Cookie, with Path, Domain, Max-Age and Expires), sent on
    every later request they match. Dict-like on names: `client.cookies["sid"]`, `.get`, `.set`, `.clear()`."""

    def __init__(self) -> None:
        # (domain or "", path, name) -> (value, host_only host, expires epoch or None)
        self._jar: dict[tuple[str, str, str], tuple[str, str, float | None]] = {}
        # The Cookie header per (host, path) until the jar changes: a server that sets the same cookie on
        # every answer (a session refresh) costs a dict lookup, not a parse.
        self._sent: dict[tuple[str, str], str] = {}
        self._last_raw: list[bytes] = []

    def __bool__(self) -> bool:
        return bool(self._jar)

    def __len__(self) -> int:
        return len(self._jar)

    def __iter__(self) -> Iterator[str]:
        return iter({name for _, _, name in self._jar})

    def __contains__(self, name: object) -> bool:
        return any(n == name for _, _, n in self._jar)

    def __getitem__(self, name: str) -> str:
        for (_, _, n), (value, _, _) in self._jar.items():
            if n == name:
                return value
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        try:
            return self[name]
        except KeyError:
            return default

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        self._jar[(domain.lstrip(".").lower(), path, name)] = (value, "", None)
        self._sent.clear()
        self._last_raw = []

    def items(self) -> list[tuple[str, str]]:
        return [(n, v) for (_, _, n), (v, _, _) in self._jar.items()]

    def get_dict(self) -> dict[str, str]:
        return dict(self.items())

    def clear(self) -> None:
        self._jar.clear()
        self._sent.clear()
        self._last_raw = []

    def store(self, host: str, request_path: str, raw_headers: list[tuple[bytes, bytes]]) -> None:
        raw = [v for k, v in raw_headers if len(k) == 10 and k.lower() == b"set-cookie"]
        if raw == self._last_raw and not any(b"xpires" in v or b"ax-age" in v for v in raw):
            return  # the very cookies the last answer set, with no expiry to move: nothing changes
        self._last_raw = raw
        self._sent.clear()
        for name, value, attrs in _set_cookies(raw_headers):
            domain = attrs.get("domain", "").lstrip(".").lower()
            path = attrs.get("path") or _default_path(request_path)
            expires: float | None = None
            if attrs.get("max-age"):
                try:
                    expires = time.time() + int(attrs["max-age"])
                except ValueError:
                    pass
            elif attrs.get("expires"):
                try:
                    from email.utils import parsedate_to_datetime

                    expires = parsedate_to_datetime(attrs["expires"]).timestamp()
                except (TypeError, ValueError):
                    pass
            key = (domain, path, name)
            if expires is not None and expires <= time.time():
                self._jar.pop(key, None)   # a server deletes a cookie by expiring it
            else:
                self._jar[key] = (value, "" if domain else host.lower(), expires)

    def header(self, host: str, path: str, tls: bool = True) -> str:
        """The Cookie header for a request to host+path ('' when none matches)."""
        key = (host, path)
        cached = self._sent.get(key)
        if cached is not None:
            return cached
        host = host.lower()
        now = 0.0
        out = []
        expiring = False
        for (domain, cpath, name), (value, host_only, expires) in list(self._jar.items()):
            if expires is not None:
                expiring = True
                now = now or time.time()
                if expires <= now:
                    del self._jar[(domain, cpath, name)]
                    self._last_raw = []
                    continue
            if host_only and host_only != host:
                continue
            if domain and not (host == domain or host.endswith("." + domain)):
                continue
            if not (path == cpath or path.startswith(cpath if cpath.endswith("/") else cpath + "/")):
                continue
            out.append(f"{name}={value}")
        header = "; ".join(out)
        if not expiring and len(self._sent) < 256:
            self._sent[key] = header
        return header


def _default_path(request_path: str) -> str:
    path = request_path.split("?", 1)[0]
    if not path.startswith("/") or path.count("/") <= 1:
        return "/"
    return path[: path.rfind("/")]


def _set_cookies(raw: list[tuple[bytes, bytes]]) -> Iterator[tuple[str, str, dict[str, str]]]:
    for k, v in raw:
        if len(k) == 10 and k.lower() == b"set-cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(v.decode("latin-1"))
            except CookieError:
                continue
            for morsel in jar.values():
                attrs = {a: str(morsel[a]) for a in ("path", "domain", "max-age", "expires") if morsel[a]}
                yield morsel.key, morsel.value, attrs


def _location(raw: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in raw:
        if len(k) == 8 and k.lower() == b"location":
            return v.decode("latin-1")
    return None


_DEFAULT_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _ssl_context(verify: bool) -> ssl.SSLContext:
    ctx = _DEFAULT_CONTEXTS.get(verify)
    if ctx is None:
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _DEFAULT_CONTEXTS[verify] = ctx
    return ctx


class HttpSession:
    """`self.client` of an HttpUser: get/post/put/delete/patch/head/options/request, each awaited, each logged
    to the stats. Called from a worker thread (a plain `def` task) the same calls block and return the
    response, as locust's client does."""

    def __init__(self, base_url: str, stats: RequestStats, timeout: float | None = 60.0, verify: bool = True,
                 on_request: Callable[..., None] | None = None) -> None:
        check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.prefix = urlsplit(base_url).path.rstrip("/")
        self._origin = _Origin(base_url)
        self._others: dict[tuple[str, str, int], _Origin] = {}
        self.stats = stats
        self.timeout = timeout
        self.verify = verify
        self.cookies = CookieJar()
        self._headers = CaseInsensitiveDict()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._head_cache: dict[tuple[str, str], bytes] = {}
        self.on_request = on_request  # events.request, set by the runner when someone listens
        self.request_name: str | None = None  # locust's: the stats name of requests without name=

    @contextlib.contextmanager
    def rename_request(self, name: str) -> Iterator[None]:
        """`with self.client.rename_request("/blog?id=[id]"):` groups the requests inside under one name."""
        self.request_name = name
        try:
            yield
        finally:
            self.request_name = None

    # Session headers, sent with every request (a request's own headers win): locust's
    # `self.client.headers.update({...})` and `self.client.headers = {...}` both work.
    @property
    def headers(self) -> CaseInsensitiveDict:
        return self._headers

    @headers.setter
    def headers(self, value: Any) -> None:
        self._headers = value if isinstance(value, CaseInsensitiveDict) else CaseInsensitiveDict(value)

    @property
    def host(self) -> str:
        return self._origin.hostname

    @property
    def port(self) -> int:
        return self._origin.port

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Conn:
        # Bounded too: a host that drops SYNs would otherwise hold a user for the kernel's ~2 minutes.
        tls: dict[str, Any] = {}
        if origin.tls:
            tls = {"ssl": _ssl_context(self.verify), "server_hostname": origin.hostname}
        _, conn = await asyncio.wait_for(
            self._loop.create_connection(_Conn, origin.address, origin.port, **tls), timeout)
        return conn

    def close(self) -> None:
        for origin in (self._origin, *self._others.values()):
            if origin.conn is not None:
                origin.conn.close()
                origin.conn = None

    def _head(self, method: str, target: str, host_header: str) -> bytes:
        key = (method, target)
        head = self._head_cache.get(key) if host_header is self._origin.host_header else None
        if head is None:
            head = (f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n"
                    f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n").encode("latin-1")
            if host_header is self._origin.host_header and len(self._head_cache) < 1024:
                self._head_cache[key] = head  # bounded: paths with ids must not grow memory forever
        return head

    async def _send(self, origin: _Origin, method: str, target: str, headers: dict[str, str] | None,
                    body: bytes | None, resp: Response, timeout: float | None) -> None:
        if headers and any(len(k) == 4 and k.lower() == "host" for k in headers):
            # A Host header of the task's own: the request goes to the origin's address with that name.
            h = CaseInsensitiveDict(headers)
            host_header = h.pop("host")
            head = (f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
                    "Accept: */*\r\n").encode("latin-1")
            headers = dict(h.items())
        else:
            head = self._head(method, target, origin.host_header)
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        if body is not None:
            wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif method in ("POST", "PUT", "PATCH"):
            wire = head + b"Content-Length: 0\r\n\r\n"
        else:
            wire = head + b"\r\n"
        conn = origin.conn
        if conn is not None and not conn.closed:
            try:
                return await self._exchange(origin, conn, wire, resp, timeout, method == "HEAD")
            except OSError as exc:
                # A kept-alive connection the server closed as we reused it (idle timeout, a backend
                # leaving): nothing of an answer came back, so an idempotent request is sent once more on a
                # fresh connection, as browsers and urllib3 do. Anything else is the server's answer.
                if isinstance(exc, TimeoutError) or conn.got_data or method not in IDEMPOTENT:
                    raise
        conn = origin.conn = await self._connect(origin, timeout)
        await self._exchange(origin, conn, wire, resp, timeout, method == "HEAD")

    async def _exchange(self, origin: _Origin, conn: _Conn, wire: bytes, resp: Response, timeout: float | None,
                        head: bool) -> None:
        if conn.closed:
            # A new connection the server closed as it accepted it (a balancer task stopping): uvloop
            # would raise RuntimeError on the write. As an OSError it is a failed request.
            raise ConnectionResetError("connection closed by server")
        waiter = conn.waiter = self._loop.create_future()
        conn.headers = []
        conn.body = []
        conn.got_data = False
        conn.head = head
        conn.transport.write(wire)  # type: ignore[union-attr]
        timer = self._loop.call_later(timeout, _expire, waiter) if timeout else None
        try:
            await waiter
        except BaseException:
            # The connection is in an unknown state (half a response, a cancelled wait): never reuse it.
            conn.close()
            origin.conn = None
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
            origin.conn = None

    def _origin_for(self, url: str) -> tuple[_Origin, str, str]:
        """(origin, request target, full url) for a path or an absolute URL."""
        if url.startswith(("http://", "https://")):
            parts = urlsplit(url)
            origin = _Origin(url)
            if origin.key == self._origin.key:
                origin = self._origin
            else:
                origin = self._others.setdefault(origin.key, origin)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            return origin, target, url
        return self._origin, self.prefix + url, self.base_url + url

    async def _request(self, method: str, url: str, name: str | None = None,
                       headers: dict[str, str] | None = None, data: bytes | str | dict[str, Any] | None = None,
                       json: Any = None, catch_response: bool = False,
                       params: dict[str, Any] | str | None = None, timeout: float | None = None,
                       allow_redirects: bool = True, cookies: dict[str, str] | None = None,
                       auth: tuple[str, str] | None = None, verify: bool | None = None,
                       context: dict[str, Any] | None = None, **unsupported: Any) -> Response:
        if unsupported:
            raise TypeError(f"client.{method.lower()}() got unsupported option(s) {', '.join(sorted(unsupported))}"
                            " (see loadtest/README.md: not supported)")
        method = method.upper()
        if params:
            url += ("&" if "?" in url else "?") + (params if isinstance(params, str) else urlencode(params, True))
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        elif isinstance(data, dict):
            data = urlencode(data, True).encode()
            headers = {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}
        elif isinstance(data, str):
            data = data.encode()
        if self._headers:
            headers = {**self._headers, **(headers or {})} if headers else dict(self._headers.items())
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        if verify is not None and verify != self.verify:
            self.verify = verify
            self.close()
        resp = (CaughtResponse if catch_response else Response)(url)
        resp.request_method = method
        start = time.perf_counter()
        try:
            await self._fetch(method, url, headers, data, resp, timeout if timeout is not None else self.timeout,
                              allow_redirects, cookies)
        except (TimeoutError, OSError, httptools.HttpParserError, ConnectionError, ValueError,
                ssl.SSLError) as exc:
            resp.error = exc
        elapsed = time.perf_counter() - start
        elapsed_ms = elapsed * 1000.0
        if not resp.history:
            resp._elapsed = elapsed
        stat_name = name or self.request_name or url
        if resp.error is None and resp.status_code >= 400:
            # Like FastHttpUser's LocustBadStatusCode(code=N): no URL in it, so failures group per (method, name).
            resp.error = f"BadStatusCode(code={resp.status_code})"
        length = len(resp.content)
        if catch_response or self.on_request is not None:
            # Built only when someone reads it: a dict per request was measurable in the benchmark.
            resp.request_meta = {"request_type": method, "method": method, "name": stat_name,
                                 "response_time": elapsed_ms, "length": length,
                                 "start_time": time.time() - elapsed, "context": context or {}}
        if catch_response:
            return resp
        # As in locust, a failed request counts as a request and as a failure.
        self.log(method, stat_name, elapsed_ms, length, resp, resp.error)
        return resp

    def log(self, method: str, name: str, elapsed_ms: float, length: int, resp: Response | None,
            error: BaseException | str | None) -> None:
        self.stats.log_request(method, name, elapsed_ms, length)
        if error is not None:
            self.stats.log_error(method, name, error)
        if self.on_request is not None:
            meta = resp.request_meta if resp is not None else {}
            self.on_request(request_type=method, name=name, response_time=elapsed_ms, response_length=length,
                            response=resp, context=meta.get("context", {}),
                            exception=None if error is None else (
                                error if isinstance(error, BaseException) else CatchResponseError(error)),
                            start_time=meta.get("start_time"), url=resp.url if resp is not None else None)

    async def _fetch(self, method: str, url: str, headers: dict[str, str] | None, body: bytes | None,
                     resp: Response, timeout: float | None, allow_redirects: bool,
                     cookies: dict[str, str] | None) -> None:
        hops = 0
        while True:
            origin, target, full = self._origin_for(url)
            sent = headers
            jar = self.cookies
            if jar or cookies:
                cookie = jar.header(origin.hostname, target.split("?", 1)[0]) if jar else ""
                if cookies:
                    extra = "; ".join(f"{k}={v}" for k, v in cookies.items())
                    cookie = f"{cookie}; {extra}" if cookie else extra
                if cookie:
                    sent = {**(headers or {}), "Cookie": cookie}
            began = time.perf_counter() if hops else 0.0
            await self._send(origin, method, target, sent, body, resp, timeout)
            if hops:
                resp._elapsed = time.perf_counter() - began  # requests' elapsed: the last hop's
            resp.url = full
            raw = resp._raw_headers
            if raw and len(raw) < 64:
                for k, _ in raw:
                    if len(k) == 10 and k.lower() == b"set-cookie":
                        jar.store(origin.hostname, target, raw)
                        break
            elif raw:
                jar.store(origin.hostname, target, raw)
            if not allow_redirects or resp.status_code not in REDIRECTS:
                return
            location = _location(raw)
            if location is None:
                return
            hops += 1
            if hops > MAX_REDIRECTS:
                raise ValueError(f"more than {MAX_REDIRECTS} redirects")
            hop = Response(full)
            hop.status_code, hop.content, hop._raw_headers = resp.status_code, resp.content, raw
            if resp.history is _NO_HISTORY:
                resp.history = []
            resp.history.append(hop)
            resp._headers = None
            url = urljoin(full, location)
            if url.startswith(self.base_url + "/") and self._origin.key == _Origin(url).key:
                url = url[len(self.base_url):]
            # As requests: 303 (and 301/302 after a POST) turn into a GET without a body; 307/308 keep both.
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                if method != "HEAD":
                    method = "GET"
                body = None
                if headers:
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type",)}

    # The public calls. In the event loop's thread they return an awaitable; from another thread (a plain
    # `def` task run in a worker) they block until the response is in and return it.
    def request(self, method: str, url: str, **kw: Any) -> Any:
        return self._call(method, url, kw)

    def get(self, url: str, **kw: Any) -> Any:
        return self._call("GET", url, kw)

    def post(self, url: str, data: Any = None, json: Any = None, **kw: Any) -> Any:
        if data is not None:
            kw["data"] = data
        if json is not None:
            kw["json"] = json
        return self._call("POST", url, kw)

    def put(self, url: str, data: Any = None, **kw: Any) -> Any:
        if data is not None:
            kw["data"] = data
        return self._call("PUT", url, kw)

    def patch(self, url: str, data: Any = None, **kw: Any) -> Any:
        if data is not None:
            kw["data"] = data
        return self._call("PATCH", url, kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self._call("DELETE", url, kw)

    def head(self, url: str, **kw: Any) -> Any:
        # requests does not follow redirects for HEAD unless asked.
        kw.setdefault("allow_redirects", False)
        return self._call("HEAD", url, kw)

    def options(self, url: str, **kw: Any) -> Any:
        return self._call("OPTIONS", url, kw)

    def _call(self, method: str, url: str, kw: dict[str, Any]) -> Any:
        if threading.get_ident() != self._loop_thread:
            if kw.get("catch_response"):
                return _BlockingCatch(self, method, url, kw)
            return _blocking(self._loop, self._request(method, url, **kw))
        if kw.get("catch_response"):
            return _CatchResponse(self, method, url, kw)
        return self._request(method, url, **kw)


def _blocking(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run a client coroutine on the user's loop from a worker thread and wait for it; gives up when the
    loop stops (the run ended), so a thread never waits forever on a request that will not run."""
    import concurrent.futures

    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    while True:
        try:
            return fut.result(timeout=0.25)
        except concurrent.futures.TimeoutError:
            if loop.is_closed() or not loop.is_running():
                fut.cancel()
                raise RuntimeError("the run ended while this request waited") from None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("request timed out"))


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


def _finish_catch(session: HttpSession, resp: CaughtResponse, exc: BaseException | None) -> bool:
    meta = resp.request_meta
    method, name, rt, length = meta["method"], meta["name"], meta["response_time"], meta["length"]
    outcome = resp._outcome
    if exc is not None:
        session.log(method, name, rt, length, resp, exc)
        return isinstance(exc, ResponseError)  # locust swallows a ResponseError after recording it
    if outcome == "success":
        session.log(method, name, rt, length, resp, None)
    elif outcome is not None:
        session.log(method, name, rt, length, resp, outcome)
    else:
        session.log(method, name, rt, length, resp, resp.error)
    return False


class _CatchResponse:
    """locust's catch_response as an async context manager: the task decides what counts as a failure."""

    def __init__(self, session: HttpSession, method: str, path: str, kw: dict[str, Any]) -> None:
        self.session, self.method, self.path, self.kw = session, method, path, kw
        self.resp: CaughtResponse | None = None

    async def __aenter__(self) -> CaughtResponse:
        # _request built a CaughtResponse: catch_response is in kw.
        self.resp = cast(CaughtResponse, await self.session._request(self.method, self.path, **self.kw))
        return self.resp

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.resp is not None
        return _finish_catch(self.session, self.resp, exc)

    def __enter__(self) -> None:
        raise TypeError("catch_response=True in an async task: use `async with self.client.get(...) as resp:`")

    def __exit__(self, *exc: object) -> None:
        return None


class _Rest:
    """FastHttpUser.rest(): catch_response with JSON parsed into `resp.js` (a body that is not JSON marks the
    request failed) and any exception inside the block marking it failed instead of ending the task, as
    locust's. `async with` in an async task, `with` in a plain `def` one."""

    def __init__(self, session: HttpSession, method: str, url: str, kw: dict[str, Any]) -> None:
        self.session, self.method, self.url, self.kw = session, method, url, kw
        self.resp: CaughtResponse | None = None

    def _opened(self, resp: CaughtResponse) -> CaughtResponse:
        js: Any = None
        if resp.error is not None and not resp.content:
            resp.failure(str(resp.error))
        elif resp.text:
            try:
                js = resp.json()
            except ValueError as e:
                resp.failure(f"Could not parse response as JSON. {resp.text[:250]}, response code "
                             f"{resp.status_code}, error {e}")
        resp.js = js
        self.resp = resp
        return resp

    def _closed(self, exc: BaseException | None) -> bool:
        from loadtest.exception import CONTROL_FLOW

        resp = self.resp
        assert resp is not None
        handled = False
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, CONTROL_FLOW):
            if isinstance(exc, AssertionError):
                resp.failure(str(exc.args[0]) if exc.args else f"assert failed at {_where(exc)}")
            else:
                resp.failure(f"{type(exc).__name__}: {exc} at {_where(exc)}")
            handled, exc = True, None
        _finish_catch(self.session, resp, exc)
        return handled

    async def __aenter__(self) -> CaughtResponse:
        kw = {**self.kw, "catch_response": True}
        return self._opened(cast(CaughtResponse, await self.session._request(self.method, self.url, **kw)))

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return self._closed(exc)

    def __enter__(self) -> CaughtResponse:
        kw = {**self.kw, "catch_response": True}
        return self._opened(cast(CaughtResponse, _blocking(self.session._loop,
                                                          self.session._request(self.method, self.url, **kw))))

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        done = threading.Event()
        out: list[bool] = []

        def finish() -> None:
            try:
                out.append(self._closed(exc))
            finally:
                done.set()

        self.session._loop.call_soon_threadsafe(finish)
        done.wait()
        return bool(out and out[0])


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


class _BlockingCatch:
    """catch_response from a plain `def` task in a worker thread: a plain `with` block, as in locust."""

    def __init__(self, session: HttpSession, method: str, path: str, kw: dict[str, Any]) -> None:
        self.session, self.method, self.path, self.kw = session, method, path, kw
        self.resp: CaughtResponse | None = None

    def __enter__(self) -> CaughtResponse:
        self.resp = cast(CaughtResponse, _blocking(self.session._loop,
                                                   self.session._request(self.method, self.path, **self.kw)))
        return self.resp

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.resp is not None
        resp = self.resp
        done = threading.Event()
        out: list[bool] = []

        def finish() -> None:
            try:
                out.append(_finish_catch(self.session, resp, exc))
            finally:
                done.set()

        self.session._loop.call_soon_threadsafe(finish)
        done.wait()
        return bool(out and out[0])
