"""Time the proxy's Python path per request with fake transports: no sockets, no wrk, no nginx.

A noisy shared machine cannot resolve a few percent with wrk; this measures only the Python work of
one keep-alive request and its response (client parse, pick, rewrite, relay, accounting) in process
time, best of R repetitions of N requests. Compare two checkouts by running it in alternation:
    .venv/bin/python bench/proxy_python_path.py SRC_DIR [N] [R]   # SRC_DIR holds the lb package
    .venv/bin/python bench/proxy_python_path.py SRC_DIR --opcodes  # Python opcodes per request (exact)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n")


class FakeTransport:
    def __init__(self) -> None:
        self.out = 0

    def write(self, data: bytes) -> None:
        self.out += len(data)

    def writelines(self, parts: list[bytes]) -> None:
        for data in parts:
            self.out += len(data)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, *args: int) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_extra_info(self, key: str) -> tuple[str, int]:
        return ("127.0.0.1", 5555)

    def get_write_buffer_size(self) -> int:
        return 0


def count_opcodes(client: object, upstream: object, n: int = 200) -> tuple[float, float]:
    """Python opcodes and calls per request, traced: deterministic, unlike any timing here."""
    counts = [0, 0]

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            counts[1] += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            counts[0] += 1
        return tracer

    sys.settrace(tracer)
    for _ in range(n):
        client.data_received(REQ)  # type: ignore[attr-defined]
        upstream.data_received(RESP)  # type: ignore[attr-defined]
    sys.settrace(None)
    return counts[0] / n, counts[1] / n


async def main(n: int, repeats: int, opcodes: bool = False) -> float:
    from lb.clock import Clock
    from lb.collect.pool import Pool
    from lb.proxy.protocol import Proxy
    from lb.proxy.upstream import UpstreamConnection

    pool = Pool(Clock())
    pool.update(["127.0.0.1:9"])
    backend = pool.backends[0]
    proxy = Proxy(pool, clock=Clock(), upstream_timeout=60, connect_timeout=5, max_header_bytes=65536,
                  idle_timeout=75, log=logging.getLogger("bench"))
    upstream = UpstreamConnection(backend)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    backend.idle.append(upstream)
    client = proxy.protocol()
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    for _ in range(1000):
        client.data_received(REQ)
        upstream.data_received(RESP)
    if opcodes:
        ops, calls = count_opcodes(client, upstream)
        print(f"{sys.argv[1]}: {ops:.0f} Python opcodes, {calls:.0f} calls per request")
        return 0.0
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            client.data_received(REQ)
            upstream.data_received(RESP)
        best = min(best, (time.process_time() - start) / n * 1e6)
    assert pool.requests_total >= n * repeats, "every request went through"
    return best


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    if "--opcodes" in sys.argv:
        asyncio.run(main(0, 0, opcodes=True))
        sys.exit(0)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    us = asyncio.run(main(count, rounds))
    print(f"{sys.argv[1]}: {us:.2f} us per request (best of {rounds} x {count}, process time)")
