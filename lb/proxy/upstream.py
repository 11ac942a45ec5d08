"""One pooled connection to a backend: an asyncio Protocol with llhttp's response parser.

It does nothing on its own: the parser's callbacks go to the Exchange using it, and when the
exchange is done the connection goes back to its backend's idle list (or is closed).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

if TYPE_CHECKING:
    from lb.collect.backend import Backend
    from lb.proxy.exchange import Exchange
    from lb.proxy.protocol import ClientConnection

# Write buffer limits: past `high` buffered bytes the other side stops reading (backpressure).
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
# Idle pooled connections are closed after this long: sooner than common backends' own keep-alive
# timeouts (uvicorn and Node 5 s), so a request rarely meets a connection the backend is closing.
IDLE_S = 4.0
# Why a client connection stopped reading (ClientConnection.pause/resume; or-ed together).
PAUSE_BODY = 1        # a body is buffered while no backend is connected, or the queue is long
PAUSE_UPSTREAM = 2    # the backend's socket buffer is full


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*([0-9]+)")


class _Extra(Exception):
    """Raised inside llhttp's callbacks to stop parsing what a backend must not have sent."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("backend", "transport", "parser", "exchange", "closed", "got_bytes", "reset_parser",
                 "read_paused", "tunnel", "head_buf", "head_pos", "in_head", "interim", "chunk", "chunk_from",
                 "last_head", "last_rewrite", "used", "idle_from", "ended", "broken", "body_seen",
                 "head_max")

    def __init__(self, backend: Backend, head_max: int = 65536) -> None:
        self.backend = backend
        self.head_max = head_max      # LB_MAX_HEADER_BYTES: a longer response head is a 502
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.got_bytes = False        # any byte of the current response arrived
        self.reset_parser = False     # a HEAD response ended at its head: parse the next afresh
        self.read_paused = False
        self.tunnel: ClientConnection | None = None   # once upgraded (WebSocket)
        # The response head is taken from the raw bytes (see headers.rewrite_response): they are
        # kept from the start of the current response until its head is complete.
        self.head_buf: bytes | bytearray = b""
        self.head_pos = 0             # where the current head starts in head_buf (after any 1xx)
        self.in_head = True
        self.interim = False          # the message being parsed is a 1xx
        # Body bytes are relayed as they came (chunked framing included), not through on_body:
        # `chunk` is the read being parsed and `chunk_from` where its body bytes begin.
        self.chunk: bytes | None = None
        self.chunk_from = 0
        self.last_head = b""          # the last raw response head and how it was rewritten
        self.last_rewrite: tuple = ()
        self.used = True              # since the last sweep (see close_stale)
        self.idle_from = 0.0
        self.ended: bool | int = False   # the response ended in the read being parsed (1: a HEAD's, at its head)
        self.broken = False           # the backend sent more than it framed: never reuse
        self.body_seen = 0            # body bytes relayed before the current read (LB_READ_TIMEOUT's progress)

    # --- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            self.tunnel.tunnel_active = True
            return
        exchange = self.exchange
        if exchange is None:          # a backend talking out of turn on an idle connection
            self.close()
            return
        self.got_bytes = True
        if self.in_head:
            buf = self.head_buf
            if buf:
                # A head in several reads: appended in place (linear), and never past the cap.
                if len(buf) + len(data) > self.head_max:
                    exchange.upstream_broken()
                    return
                if type(buf) is bytes:
                    buf = bytearray(buf)
                buf += data
                self.head_buf = buf
            else:
                self.head_buf = data
            self.chunk_from = len(data)     # no body in it unless a head completes
        else:
            self.chunk_from = 0
        self.chunk = data
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self.chunk = None
            exchange.upstream_upgraded(data[upgrade.args[0]:])
            return
        except HttpParserError:
            chunk, self.chunk = self.chunk, None
            if self.ended:            # bytes after the response's end (see on_message_begin)
                self._finish(exchange, chunk, True)
            else:
                exchange.upstream_broken()
            return
        chunk, self.chunk = self.chunk, None
        if self.ended:
            if self.ended is True and self.exchange is exchange:   # _finish's common case, inlined
                self.ended = False
                if chunk is not None and self.chunk_from < len(chunk):
                    exchange.relay(chunk[self.chunk_from:] if self.chunk_from else chunk)
                exchange.response_complete()
            else:
                self._finish(exchange, chunk, False)
        elif chunk is not None and self.exchange is exchange:   # a response still in progress
            if self.chunk_from:
                chunk = chunk[self.chunk_from:]
            self.body_seen += len(chunk)
            exchange.relay(chunk)
        if self.reset_parser:
            self.reset_parser = False
            self.parser = HttpResponseParser(self)

    def _finish(self, exchange: Exchange, chunk: bytes | None, extra: bool) -> None:
        """The response ended in this read: relay its last body bytes and end the exchange.

        A backend never sends more (no pipelining upstream). If it did (more than Content-Length,
        a body on 204/304 or to HEAD), only the framed bytes reach the client and the connection
        is never reused: its next response would belong to nobody.
        """
        self.ended = False
        if self.exchange is not exchange:
            return
        body = chunk[self.chunk_from:] if chunk is not None and self.chunk_from < len(chunk) else b""
        if exchange.method == b"HEAD":
            extra = extra or bool(body)   # HEAD ends at its head: a body is a broken backend's
            self.reset_parser = True
            body = b""
        if extra:
            self.broken = True
            if body and not exchange.no_body:
                length = _CONTENT_LENGTH.search(self.last_head)
                if length is None or exchange.rechunk:   # chunked: the framed end is not known here
                    exchange.upstream_broken()
                    return
                body = body[:max(0, int(length.group(1)) - self.body_seen)]
        if body:
            exchange.relay(body)
        exchange.response_complete()
        if self.reset_parser:
            self.reset_parser = False
            self.parser = HttpResponseParser(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.close()
        idle = self.backend.idle
        if self in idle:
            idle.remove(self)
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            exchange.upstream_lost(self)

    def pause_writing(self) -> None:
        client = self.tunnel if self.tunnel is not None else self.exchange.client if self.exchange else None
        if client is not None:
            client.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        client = self.tunnel if self.tunnel is not None else self.exchange.client if self.exchange else None
        if client is not None:
            client.resume(PAUSE_UPSTREAM)

    # --- llhttp callbacks, handed to the exchange ----------------------------------------------
    def on_message_begin(self) -> None:
        if self.ended:                # a second message in the read that ended the response
            raise _Extra()

    def on_headers_complete(self) -> None:
        buf = self.head_buf
        end = buf.find(b"\r\n\r\n", self.head_pos)
        head = buf[self.head_pos:end]   # a bytearray when the head came in several reads: as good
        self.head_pos = end + 4
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True       # 100 is the proxy's to send, other 1xx are dropped
            return
        if end > self.head_max:       # the whole head, 1xx included
            raise _Extra()
        self.in_head = False
        self.chunk_from = end + 4 - (len(buf) - len(self.chunk))  # type: ignore[arg-type]
        self.head_buf = b""
        self.body_seen = 0
        # No exchange (the response was given up on in this read): the AttributeError stops the parse.
        self.exchange.response_head(status, self.parser.should_keep_alive(), head)  # type: ignore[union-attr, arg-type]

    def on_message_complete(self) -> None:
        if self.interim:              # the final response's head follows the 1xx
            self.interim = False
            return
        self.in_head = True
        self.head_pos = 0
        self.ended = self.ended or True   # relayed and ended once the read is parsed (a HEAD's stays 1)

    # --- the pool's side -----------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def release(self, reusable: bool) -> None:
        """The exchange is done with this connection: keep it idle for the next one, or close it."""
        self.exchange = None
        self.got_bytes = False
        self.in_head = True
        self.head_buf = b""
        self.head_pos = 0
        if reusable and not self.closed and not self.backend.retired and not self.broken:
            self.resume_reading()
            self.backend.idle.append(self)
        else:
            self.close()

    def close(self) -> None:
        self.exchange = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        idle = self.backend.idle
        if self in idle:
            idle.remove(self)


def close_stale(backend: Backend, now: float, idle_s: float = IDLE_S) -> None:
    """Close pooled connections nobody used for idle_s (a sweep calls this; requests only set `used`)."""
    for conn in list(backend.idle):
        if conn.used:
            conn.used = False
            conn.idle_from = now
        elif now - conn.idle_from >= idle_s:
            conn.close()
