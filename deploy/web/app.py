"""A small example web service to sit behind the balancer.

Each request waits WEB_LATENCY_MS (off the CPU, like a call to a database) and then burns
WEB_CPU_MS of CPU, so load builds real concurrency and real CPU use. A request may override both
with `?latency_ms=` and `?cpu_ms=`. The answer names the replica, so a client sees the spread.

On SIGTERM (Swarm scaling down) it keeps serving for WEB_DRAIN_MS while /healthz answers 503, then
stops accepting and lets in-flight requests finish: a balancer that polls the task list every
second has time to stop sending before the listener closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

from aiohttp import web


def _env_ms(name: str, default: str) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise SystemExit(f"{name}={os.environ.get(name)!r}: expects a number of milliseconds") from None
    if value < 0:
        raise SystemExit(f"{name}={value:g}: expects a number >= 0")
    return value


def _burn(seconds: float) -> None:
    """Busy CPU for `seconds` of this thread's CPU time (not wall time: fair under contention)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def make_app(latency_ms: float, cpu_ms: float) -> web.Application:
    app = web.Application()
    state = {"draining": False, "served": 0}
    hostname = socket.gethostname()

    def _query_ms(request: web.Request, name: str, default: float) -> float:
        try:
            return max(0.0, float(request.query.get(name, default)))
        except ValueError:
            raise web.HTTPBadRequest(text=f"{name} expects a number\n") from None

    async def handle(request: web.Request) -> web.Response:
        latency = _query_ms(request, "latency_ms", latency_ms)
        cpu = _query_ms(request, "cpu_ms", cpu_ms)
        if latency:
            await asyncio.sleep(latency / 1000)
        if cpu:
            _burn(cpu / 1000)  # on the loop on purpose: a replica's CPU is what load should exhaust
        state["served"] += 1
        body = {"replica": hostname, "path": request.path, "latency_ms": latency, "cpu_ms": cpu}
        return web.json_response(body)

    async def healthz(request: web.Request) -> web.Response:
        if state["draining"]:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")

    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    app["state"] = state
    return app


async def serve(port: int, latency_ms: float, cpu_ms: float, drain_ms: float) -> None:
    app = make_app(latency_ms, cpu_ms)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port, reuse_address=True, backlog=1024)
    await site.start()
    log = {"msg": "listening", "port": port, "latency_ms": latency_ms, "cpu_ms": cpu_ms}
    print(json.dumps(log), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    app["state"]["draining"] = True
    print(json.dumps({"msg": "draining", "drain_ms": drain_ms}), flush=True)
    await asyncio.sleep(drain_ms / 1000)
    await runner.cleanup()  # stop listening, then wait for in-flight requests
    print(json.dumps({"msg": "stopped", "served": app["state"]["served"]}), flush=True)


def main() -> None:
    port = int(os.environ.get("WEB_PORT", "8000"))
    asyncio.run(serve(port, _env_ms("WEB_LATENCY_MS", "50"), _env_ms("WEB_CPU_MS", "0"),
                      _env_ms("WEB_DRAIN_MS", "2000")))


if __name__ == "__main__":
    main()
