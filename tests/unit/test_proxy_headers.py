"""Head rewriting (RFC 9110 7.6.1): table-driven, no sockets."""

from __future__ import annotations

import pytest

from lb.proxy.headers import build_request, error_response, rewrite_response


def names(head: bytes) -> list[bytes]:
    return [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:] if line]


@pytest.mark.parametrize("headers, dropped, kept", [
    ([(b"Host", b"h"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"300")],
     [b"connection", b"keep-alive"], [b"host"]),
    ([(b"Host", b"h"), (b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"), (b"X-Other", b"2")],
     [b"connection", b"x-secret"], [b"x-other"]),
    ([(b"Host", b"h"), (b"X-Secret", b"1"), (b"Connection", b"X-Secret")],   # named after it appears
     [b"x-secret", b"connection"], [b"host"]),
    ([(b"Host", b"h"), (b"TE", b"trailers"), (b"Trailer", b"X"), (b"Proxy-Connection", b"x"),
      (b"Upgrade", b"h2c")], [b"te", b"trailer", b"proxy-connection", b"upgrade"], [b"host"]),
    ([(b"Host", b"h"), (b"Connection", b"Content-Length"), (b"Content-Length", b"3")],
     [b"connection"], [b"content-length"]),   # framing is never dropped on a header's say-so
])
def test_request_hop_by_hop(headers, dropped, kept):
    req = build_request(b"GET", b"/", headers, b"10.0.0.9", upgrade=False)
    present = names(req.head)
    assert not set(dropped) & set(present)
    assert set(kept) <= set(present)


def test_request_forwarded_headers_and_framing():
    req = build_request(b"POST", b"/p?q=1", [(b"Host", b"site"), (b"X-Forwarded-For", b"1.1.1.1"),
                                             (b"X-Forwarded-Proto", b"https"), (b"Transfer-Encoding", b"chunked"),
                                             (b"Expect", b"100-continue")], b"10.0.0.9", upgrade=False)
    assert req.head.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\n" in req.head
    assert b"X-Forwarded-Proto: http\r\n" in req.head and b"https" not in req.head
    assert b"X-Forwarded-Host: site\r\n" in req.head
    assert b"Transfer-Encoding: chunked\r\n" in req.head and b"Expect" not in req.head
    assert req.chunked and req.has_body and req.expect_continue and req.has_host
    assert req.head.endswith(b"\r\n\r\n")


def test_request_upgrade_keeps_upgrade_and_http10_asks_keep_alive():
    ws = build_request(b"GET", b"/ws", [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
                       b"1.2.3.4", upgrade=True)
    assert ws.upgrade and b"Connection: upgrade\r\nUpgrade: websocket\r\n" in ws.head
    old = build_request(b"GET", b"/", [], b"1.2.3.4", upgrade=False, http11=False)
    assert old.head.startswith(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n") and not old.has_host


@pytest.mark.parametrize("raw, expected, length, chunked", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2", True, False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1",
     b"HTTP/1.1 200 OK\r\nX-A: 1", False, True),
    (b"HTTP/1.0 404 Not Found\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nX-End: 2",
     b"HTTP/1.1 404 Not Found\r\nX-End: 2", False, False),
    (b"HTTP/1.1 204 No Content\r\nServer: s", b"HTTP/1.1 204 No Content\r\nServer: s", False, False),
])
def test_response_rewrite(raw, expected, length, chunked):
    head, has_length, is_chunked, upgrade_to = rewrite_response(raw)
    assert (head, has_length, is_chunked, upgrade_to) == (expected, length, chunked, None)


def test_response_upgrade_value():
    head, _, _, upgrade_to = rewrite_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                              b"Connection: Upgrade\r\nSec-WebSocket-Accept: x")
    assert upgrade_to == b"websocket" and head == b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x"


def test_error_response():
    raw = error_response(503, b"Service Unavailable", close=False, retry_after=1)
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"Retry-After: 1\r\n" in raw
    assert b"Connection: close" not in raw and raw.endswith(b"\r\n\r\n503 Service Unavailable\n")
