"""Request and response heads as the proxy rewrites them (RFC 9110 section 7.6.1).

Hop-by-hop fields (Connection, Proxy-Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
Upgrade, and every field the Connection header names) are dropped; framing is re-added by the
proxy because it may re-chunk a body. X-Forwarded-For is appended to, -Proto and -Host are set.
"""

from __future__ import annotations

from typing import NamedTuple

HOP_BY_HOP = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"))
# The Connection header may not make the proxy drop the fields it frames messages with.
_NEVER_DROPPED = frozenset((b"content-length", b"host"))

Headers = list[tuple[bytes, bytes]]


# Connection values that name no other field: the common case needs no second look.
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"upgrade", b"keep-alive, upgrade", b"upgrade, keep-alive"))


def _drop_set(headers: Headers) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            value = value.lower()
            if value not in _PLAIN_CONNECTION:
                tokens.update(t.strip() for t in value.split(b",") if t.strip())
    if not tokens:
        return HOP_BY_HOP
    return HOP_BY_HOP | (frozenset(tokens) - _NEVER_DROPPED)


class RequestHead(NamedTuple):
    head: bytes            # request line, headers and the blank line, ready for the backend
    chunked: bool          # body arrives chunked (the proxy re-chunks what the parser decodes)
    has_body: bool
    expect_continue: bool
    upgrade: bool
    has_host: bool         # False for an HTTP/1.0 request without Host: the backend's address is added


def build_request(method: bytes, target: bytes, headers: Headers, client_ip: bytes,
                  upgrade: bool) -> RequestHead:
    drop = _drop_set(headers)
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    xff = host = upgrade_to = None
    chunked = expect = False
    length = b""
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            if lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"upgrade":
                upgrade_to = value
            continue
        if lower.startswith(b"x-forwarded-"):
            if lower == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
                continue
            if lower == b"x-forwarded-proto" or lower == b"x-forwarded-host":
                continue
        elif lower == b"expect":
            # The proxy answers 100-continue itself once a backend is connected (as nginx does).
            expect = value.strip().lower() == b"100-continue"
            continue
        elif lower == b"host":
            host = value
        elif lower == b"content-length":
            length = value.strip()
        out += (name, b": ", value, b"\r\n")
    out += (b"X-Forwarded-For: ", client_ip if xff is None else xff + b", " + client_ip,
            b"\r\nX-Forwarded-Proto: http\r\n")
    if host is not None:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    upgrade = upgrade and upgrade_to is not None
    if upgrade:
        out += (b"Connection: upgrade\r\nUpgrade: ", upgrade_to, b"\r\n")
    out.append(b"\r\n")
    has_body = chunked or (length != b"" and length != b"0")
    return RequestHead(b"".join(out), chunked, has_body, expect and has_body, upgrade, host is not None)


class ResponseHead(NamedTuple):
    parts: list[bytes]     # status line and end-to-end headers; the caller adds framing
    length: bool           # Content-Length present
    chunked: bool          # body arrives chunked
    upgrade_to: bytes | None


def build_response(status: int, reason: bytes, headers: Headers) -> ResponseHead:
    drop = _drop_set(headers)
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"-")]
    length = chunked = False
    upgrade_to = None
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            if lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"upgrade":
                upgrade_to = value
            continue
        if lower == b"content-length":
            length = True
        out += (name, b": ", value, b"\r\n")
    return ResponseHead(out, length, chunked, upgrade_to)


def error_response(status: int, reason: bytes, close: bool, retry_after: int | None = None) -> bytes:
    body = b"%d %s\n" % (status, reason)
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s"
            % (status, reason, len(body), extra, b"Connection: close\r\n" if close else b"", body))
