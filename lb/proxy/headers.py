"""Request and response heads as the proxy rewrites them (RFC 9110 section 7.6.1).

Hop-by-hop fields (Connection, Proxy-Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
Upgrade, and every field the Connection header names) are dropped; framing is re-added by the
proxy because it may re-chunk a body. X-Forwarded-For is appended to, -Proto and -Host are set.
"""

from __future__ import annotations

import re
from typing import NamedTuple

HOP_BY_HOP = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"))
# Never forwarded from a client either: `Proxy` would become HTTP_PROXY in a CGI-style backend (httpoxy).
_DROPPED = HOP_BY_HOP | {b"proxy"}
# The Connection header may not make the proxy drop the fields it frames messages with.
_NEVER_DROPPED = frozenset((b"content-length", b"host"))

Headers = list[tuple[bytes, bytes]]


# Connection values that name no other field: the common case needs no second pass.
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"upgrade", b"keep-alive, upgrade", b"upgrade, keep-alive"))


def _named_by_connection(value: bytes) -> frozenset[bytes]:
    """Fields a Connection header names beyond the standard hop-by-hop ones (usually none)."""
    value = value.lower()
    if value in _PLAIN_CONNECTION:
        return frozenset()
    return frozenset(t.strip() for t in value.split(b",")) - HOP_BY_HOP - _NEVER_DROPPED - {b""}


class RequestHead(NamedTuple):
    head: bytes            # request line, headers and the blank line, ready for the backend
    chunked: bool          # body arrives chunked (the proxy re-chunks what the parser decodes)
    has_body: bool
    expect_continue: bool
    upgrade: bool
    has_host: bool         # False for an HTTP/1.0 request without Host: the backend's address is added


class Rejected(Exception):
    """A request the proxy refuses (nginx does too): `status` is the answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# RFC 3986 host (reg-name, IPv4, or [IPv6]) and an optional port: anything else in Host is refused.
_VALID_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")


def build_request(method: bytes, target: bytes, headers: Headers, client_ip: bytes,
                  upgrade: bool, http11: bool = True, drop: frozenset[bytes] = _DROPPED) -> RequestHead:
    """The head for the backend. Raises Rejected for what nginx refuses too: a missing (HTTP/1.1),
    repeated or invalid Host (400), Transfer-Encoding from HTTP/1.0 (400) or other than one final
    chunked (501). Names with an underscore are dropped (nginx's underscores_in_headers off): they
    could pass for the forwarding headers the proxy sets.
    """
    # An HTTP/1.0 client's request goes as HTTP/1.0 (kept alive), so the backend never answers it
    # chunked: the proxy relays bodies as they come and does not de-chunk.
    out = [method, b" ", target, b" HTTP/1.1\r\n" if http11 else b" HTTP/1.0\r\nConnection: keep-alive\r\n"]
    xff = host = upgrade_to = None
    chunked = expect = False
    length = b""
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            if lower == b"transfer-encoding":
                if chunked or not http11:
                    raise Rejected(400)   # repeated (llhttp refuses most), or from HTTP/1.0: a desync
                if value.strip().lower() != b"chunked":
                    raise Rejected(501)   # codings we would have to undo (llhttp took a final chunked)
                chunked = True
            elif lower == b"upgrade":
                upgrade_to = value
            elif lower == b"connection" and drop is _DROPPED:
                named = _named_by_connection(value)
                if named:   # start again, now dropping those too
                    return build_request(method, target, headers, client_ip, upgrade, http11,
                                         _DROPPED | named)
            continue
        if b"_" in lower:
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
            if host is not None or not _VALID_HOST.fullmatch(value):
                raise Rejected(400)
            host = value
        elif lower == b"content-length":
            length = value.strip()
        out += (name, b": ", value, b"\r\n")
    if host is None and http11:
        raise Rejected(400)
    out += (b"X-Forwarded-For: ", client_ip if xff is None else xff + b", " + client_ip,
            b"\r\nX-Forwarded-Proto: http\r\n")
    if host is not None:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    has_body = chunked or (length != b"" and length != b"0")
    # Upgrade is forwarded for a bodiless HTTP/1.1 request (WebSocket); with a body (curl --http2 -d)
    # or for h2c it is dropped, as nginx does: the request goes as a plain one, body and all.
    if upgrade and upgrade_to is not None and http11 and not has_body and upgrade_to.strip().lower() != b"h2c":
        out += (b"Connection: upgrade\r\nUpgrade: ", upgrade_to, b"\r\n")
    else:
        upgrade = False
    out.append(b"\r\n")
    return RequestHead(b"".join(out), chunked, has_body, expect and has_body, upgrade, host is not None)


# A response head is rewritten as bytes, not field by field: a couple of regex passes instead of
# a Python call per header is most of what keeps the proxy near nginx. llhttp already validated it.
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|connection|keep-alive|upgrade|te|trailer"
                      rb"|proxy-connection):[ \t]*([^\r\n]*)")
_HOP_LINE = re.compile(rb"\r\n(?:connection|proxy-connection|keep-alive|te|trailer|transfer-encoding|upgrade)"
                       rb":[^\r\n]*", re.IGNORECASE)


def rewrite_response(head: bytes) -> tuple[bytes, bool, bool | None, bytes | None]:
    """`head`: a response's status line and fields as received, without the final blank line.

    Returns (head without hop-by-hop fields, has Content-Length, is chunked, Upgrade value).
    "is chunked" is None when Transfer-Encoding is anything but one `chunked` (`xchunked`,
    `chunked, gzip`, `gzip, chunked`): RFC 9112 would read such a body to the close, with codings
    the client could no longer see once the field is dropped, so the proxy answers 502 instead.
    """
    length = hop = False
    chunked: bool | None = False
    upgrade_to = None
    named: frozenset[bytes] = frozenset()
    for name, value in _FRAMING.findall(head.lower()):
        if name == b"content-length":
            length = True
            continue
        hop = True
        if name == b"transfer-encoding":
            chunked = None if chunked is not False or value.strip() != b"chunked" else True
        elif name == b"connection":
            named = named | _named_by_connection(value.strip())
        elif name == b"upgrade":
            found = re.search(rb"(?i)\r\nupgrade:[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|$)", head)
            upgrade_to = found.group(1) if found else None
    if hop:
        head = _HOP_LINE.sub(b"", head)
        if named:
            names = b"|".join(re.escape(n) for n in named)
            head = re.sub(rb"\r\n(?:" + names + rb"):[^\r\n]*", b"", head, flags=re.IGNORECASE)
    if not head.startswith(b"HTTP/1.1 "):
        head = b"HTTP/1.1" + head[8:]   # we speak HTTP/1.1 to the client, whatever the backend spoke
    return head, length, chunked, upgrade_to


# The statuses the proxy answers by itself.
REASONS = {400: b"Bad Request", 405: b"Method Not Allowed", 408: b"Request Timeout",
           431: b"Request Header Fields Too Large", 501: b"Not Implemented", 502: b"Bad Gateway",
           503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported"}

_LENGTH_LINE = re.compile(rb"\r\ncontent-length:[^\r\n]*", re.IGNORECASE)


def strip_length(head: bytes) -> bytes:
    """A 204 carries no Content-Length (RFC 9110 8.6): a backend's is dropped with its body."""
    return _LENGTH_LINE.sub(b"", head)


def error_response(status: int, reason: bytes, close: bool, retry_after: int | None = None) -> bytes:
    body = b"%d %s\n" % (status, reason)
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s"
            % (status, reason, len(body), extra, b"Connection: close\r\n" if close else b"", body))
