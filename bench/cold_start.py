"""Cold start from zero on the real engine: what a burst at zero costs, measured.

With a stack up at zero (LB_MIN_REPLICAS=0 make swarm-up), it waits until web is at 0 replicas,
sends N requests at once to the balancer, and prints per burst: the engine's start time (scale
request -> first web task `running`), how long requests were held, the release delay (first task
running -> first answer), the replicas asked for within 10 s, and the time back to 0 after.

    python bench/cold_start.py --port 8080 --stack swarmscale --requests 64 --rounds 1

Traffic goes only to 127.0.0.1:PORT; the engine is only read (service and task lists).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import time
import urllib.request

import aiohttp
import docker


def unix(stamp: str) -> float:
    head, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return base.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


def replicas(api: docker.APIClient, name: str) -> int:
    return int(api.inspect_service(name)["Spec"]["Mode"]["Replicated"].get("Replicas", 0))


def first_running(api: docker.APIClient, name: str, after: float) -> float | None:
    """Unix time the first task of `name` created after `after` reached running (from its events)."""
    times = []
    for task in api.tasks(filters={"service": name}):
        status = task.get("Status") or {}
        if unix(task.get("CreatedAt", "")) >= after - 1 and status.get("State") == "running":
            times.append(unix(status["Timestamp"]))
    return min(times) if times else None


def wait_zero(api: docker.APIClient, web: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while replicas(api, web) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)


async def burst(port: int, n: int) -> list[tuple[int, float, float]]:
    """(status, sent at, answered at) of n requests sent at once (Unix times)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=90)) as session:
        async def one() -> tuple[int, float, float]:
            sent = time.time()
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as r:
                    await r.read()
                    return r.status, sent, time.time()
            except (aiohttp.ClientError, TimeoutError):
                return 0, sent, time.time()
        return await asyncio.gather(*(one() for _ in range(n)))


def status(admin_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as r:
        return json.load(r)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--stack", default="swarmscale")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--zero-timeout", type=float, default=180)
    args = parser.parse_args()
    api = docker.APIClient(version="1.41")
    web = f"{args.stack}_web"
    for round_ in range(1, args.rounds + 1):
        deadline = time.monotonic() + args.zero_timeout
        while replicas(api, web) != 0 or any(t["Status"]["State"] == "running"
                                             for t in api.tasks(filters={"service": web})):
            assert time.monotonic() < deadline, "web did not reach 0 replicas"
            await asyncio.sleep(0.5)
        began = time.time()
        task = asyncio.create_task(burst(args.port, args.requests))
        asked = 0
        while time.time() - began < 10:
            asked = max(asked, replicas(api, web))
            await asyncio.sleep(0.25)
        results = await task
        running = first_running(api, web, began)
        answered = [end for code, _, end in results if code == 200]
        held = [end - sent for _, sent, end in results]
        body = status(args.port + 1)["replicas"]
        ok = sum(1 for code, _, _ in results if code == 200)
        late = max(end - running for end in answered) if running and answered else None
        await asyncio.to_thread(wait_zero, api, web, args.zero_timeout)
        back = time.time() - max(end for _, _, end in results)   # from the burst's last answer
        print(f"round {round_}: {ok}/{len(results)} ok; engine start (burst -> first task running) "
              f"{running - began:.2f} s; balancer's measured cold start (scale -> serving) "
              f"{body.get('measured_cold_start_s')} s; held {min(held):.2f}..{max(held):.2f} s "
              f"(last_cold_start_s {body.get('last_cold_start_s')}); release delay (first running -> "
              f"first answer) {min(answered) - running:.3f} s, last answer {late:.3f} s after; "
              f"replicas asked within 10 s: {asked}; back at 0 {back:.0f} s after the last answer"
              if running and answered else f"round {round_}: {ok}/{len(results)} ok; no task seen running")
        if running and answered:
            print(f"  (Unix times: burst {began:.3f}, first task running {running:.3f}, "
                  f"first answer {min(answered):.3f}, last answer {max(answered):.3f})")


if __name__ == "__main__":
    asyncio.run(main())
