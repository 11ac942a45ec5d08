"""The whole product on a real Docker engine in Swarm mode: deploy the stack, load it, watch it scale.

Load goes only to the balancer's published port on 127.0.0.1. The balancer reaches the engine through
a socket relay the test owns (`EngineRelay`), so the test can cut the engine off from the balancer
without touching the engine or anything else running on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.request
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

docker = pytest.importorskip("docker")
from tests.e2e.conftest import TEST_LABEL, replicas_of, swarm_sh, wait_until  # noqa: E402

# Overridable, so two checkouts sharing one engine can each run this file (see PLAN: ssr*/ssz*).
STACK = os.environ.get("SWARMSCALE_E2E_STACK", "sse2e")
PORT = int(os.environ.get("SWARMSCALE_E2E_PORT", "18080"))
ADMIN_PORT = PORT + 1
ENGINE_SOCKET = "/var/run/docker.sock"
# Small windows so one test run sees a whole grow-and-shrink cycle in well under two minutes.
SETTINGS = {
    "LB_TARGET_INFLIGHT": "8",
    "LB_STABLE_WINDOW": "12",
    "LB_PANIC_WINDOW": "3",
    "LB_SCALE_INTERVAL": "1",
    "LB_MIN_REPLICAS": "1",
    "LB_MAX_REPLICAS": "6",
    "WEB_LATENCY_MS": "100",
    "LB_STALL_AFTER": "1",    # a paused task's requests move well inside the paused test's 8 s
}
CLIENTS = 48  # 48 in flight / 8 per replica -> the policy asks for 6


class EngineRelay:
    """A Unix socket that relays to the engine's socket, and can refuse while `down`.

    The stack mounts this relay's socket in place of the engine's. `cut()` closes every relayed
    connection (docker-py keeps one alive) and from then on accepts and at once closes new ones:
    to the balancer the engine is unreachable. The listening socket itself stays, so the bind mount
    stays valid and the balancer gets the engine back unchanged after `restore()`.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "docker.sock"
        directory.mkdir(parents=True, exist_ok=True)
        with suppress(FileNotFoundError):
            self.path.unlink()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        self.down = threading.Event()
        self.refused = 0
        self.open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                client.close()
                continue
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(ENGINE_SOCKET)
            except OSError:
                client.close()
                continue
            self.open |= {client, engine}
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self.down.set()
        for sock in list(self.open):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def restore(self) -> None:
        self.down.clear()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self.server.close()
        with suppress(FileNotFoundError):
            self.path.unlink()


async def wait_for(predicate, timeout: float, what: str):
    """conftest's bounded poll, on a thread: the engine calls block, the load must not."""
    return await asyncio.to_thread(wait_until, predicate, timeout, what, 0.5)


@dataclass
class LoadResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    backends_seen: set[str] = field(default_factory=set)


async def load(session: aiohttp.ClientSession, clients: int, seconds: float,
               max_requests: int = 200_000, stop: asyncio.Event | None = None) -> LoadResult:
    """`clients` closed-loop users for `seconds` (or until `stop`), bounded in count too."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    stop = stop or asyncio.Event()

    async def user() -> None:
        while (time.monotonic() < deadline and not stop.is_set()
               and result.ok + len(result.failed) < max_requests):
            try:
                async with session.get(f"http://127.0.0.1:{PORT}/") as response:
                    body = await response.read()
                    if response.status == 200:
                        result.ok += 1
                        result.backends_seen.add(json.loads(body)["replica"])
                    else:
                        result.failed.append(f"{response.status} {body[:80]!r}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                result.failed.append(repr(exc))

    await asyncio.gather(*(user() for _ in range(clients)))
    return result


async def status() -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{ADMIN_PORT}/status") as response:
            return await response.json()


@pytest.fixture(scope="module")
def stack(engine, images):
    """The stack, deployed the way a user does it (swarm.sh up), under its own name and ports."""
    relay = EngineRelay(Path(f"/run/swarmscale-e2e-{STACK}"))
    env = dict(os.environ, **SETTINGS, SWARMSCALE_STACK=STACK, LB_PUBLISHED_PORT=str(PORT),
               LB_ADMIN_PUBLISHED_PORT=str(ADMIN_PORT), LB_DOCKER_SOCKET=str(relay.path))
    # A run that was killed (CI stopped, a person's ^C) leaves its stack and bystander behind; the
    # re-deploy would keep the old replicas and the name would conflict, so start from nothing.
    for old in engine.services.list(filters={"label": f"{TEST_LABEL}={STACK}"}):
        with suppress(docker.errors.NotFound):
            old.remove()
    swarm_sh("down", env)
    # A service of someone else's in the same Swarm, which the balancer must leave alone.
    bystander = engine.services.create(
        images["web"], name=f"{STACK}-bystander", mode=docker.types.ServiceMode("replicated", 2),
        labels={TEST_LABEL: STACK})
    try:
        swarm_sh("up", env)
        yield engine, relay, bystander
    finally:
        with suppress(Exception):
            bystander.remove()
        swarm_sh("down", env)
        relay.close()


async def test_backends_are_discovered(stack):
    client, _, _ = stack
    await wait_for(lambda: replicas_of(client, f"{STACK}_web") == 1, 60, "web at 1 replica")
    seen: list[dict] = []

    def one_active_backend_and_replica() -> bool:   # the control loop reads the count at its first tick
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/status", timeout=10) as response:
            seen.append(json.load(response))
        body = seen[-1]
        return [b["state"] for b in body["backends"]] == ["active"] and body["replicas"]["current"] == 1

    await wait_for(one_active_backend_and_replica, 30, "the balancer to serve from web's one task")
    body = seen[-1]
    tasks = client.services.get(f"{STACK}_web").tasks(filters={"desired-state": "running"})
    addresses = {a.split("/")[0] for t in tasks for n in t.get("NetworksAttachments", [])
                 for a in n.get("Addresses", [])}
    assert body["backends"][0]["address"].split(":")[0] in addresses


async def test_grows_under_load_and_shrinks_after_without_one_failed_request(stack):
    client, _, bystander = stack
    bystander_version = client.services.get(bystander.id).attrs["Version"]["Index"]
    await wait_for(lambda: replicas_of(client, f"{STACK}_web") == 1, 90, "web at 1 replica before load")

    timeline: list[tuple[float, int]] = []
    start = time.monotonic()
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            timeline.append((time.monotonic() - start, await asyncio.to_thread(replicas_of, client, f"{STACK}_web")))
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    watcher = asyncio.create_task(watch())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        burst = await load(session, CLIENTS, 25)
        load_end = time.monotonic() - start
        # A trickle while the service shrinks: scale-down must not fail anyone either.
        shrunk = asyncio.Event()
        shrink = asyncio.create_task(load(session, 2, 60, stop=shrunk))
        await wait_for(lambda: replicas_of(client, f"{STACK}_web") == 1, 60, "web back at 1 replica")
        back_at_min = time.monotonic() - start
        await asyncio.sleep(3)  # keep the trickle on while the last removed task drains
        shrunk.set()
        trickle = await shrink
    stop.set()
    await watcher

    peak = max(n for _, n in timeline)
    changes = [(round(t, 1), n) for i, (t, n) in enumerate(timeline) if i == 0 or n != timeline[i - 1][1]]
    print(f"\nreplica changes (s, replicas): {changes}\npeak {peak}, load end {load_end:.1f}s, "
          f"back at min {back_at_min:.1f}s, requests {burst.ok + trickle.ok}")
    assert burst.failed == [] and trickle.failed == []
    assert peak == 6                          # ceil(48 in flight / 8 per replica), the max
    assert len(burst.backends_seen) >= 4      # traffic reached the new tasks
    assert burst.ok > 1000 and trickle.ok > 0
    # Other services in the Swarm were not touched.
    assert client.services.get(bystander.id).attrs["Version"]["Index"] == bystander_version
    assert replicas_of(client, bystander.id) == 2


async def test_keeps_serving_while_the_engine_is_unreachable_and_scales_once_it_is_back(stack):
    client, relay, _ = stack
    await wait_for(lambda: replicas_of(client, f"{STACK}_web") == 1, 90, "web at 1 replica")
    relay.cut()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            cut_off = await load(session, 32, 8)
        assert cut_off.failed == [] and cut_off.ok > 100
        assert replicas_of(client, f"{STACK}_web") == 1     # no way to scale without the engine
        assert relay.refused > 0                              # the balancer did try
        body = await status()
        assert body["replicas"]["engine_ok"] is False
    finally:
        relay.restore()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        loaded = asyncio.create_task(load(session, 32, 30))
        await wait_for(lambda: replicas_of(client, f"{STACK}_web") >= 3, 30, "scaling to resume")
        result = await loaded
    assert result.failed == []


async def _under_load(client, clients: int, action, settle: float = 3.0,
                      timeout: float = 30.0) -> tuple[LoadResult, int, int]:
    """Load until replicas settle above 1, run `action` (blocking, on a thread), keep loading a while.

    Returns the load's result, the replicas just before the action and the fewest seen after it.
    A request that takes longer than `timeout` is a failure.
    """
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        running = asyncio.create_task(load(session, clients, 240, stop=stop))
        await wait_for(lambda: replicas_of(client, f"{STACK}_web") >= 5, 60, "web scaled out under load")
        await asyncio.sleep(2)
        before = replicas_of(client, f"{STACK}_web")
        lowest = [before]
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                lowest[0] = min(lowest[0], await asyncio.to_thread(replicas_of, client, f"{STACK}_web"))
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        await asyncio.to_thread(action)
        await asyncio.sleep(settle)
        done.set()
        await watcher
        stop.set()
        result = await running
    return result, before, lowest[0]


def _rolled(client, version: int):
    def check() -> bool:
        s = client.services.get(f"{STACK}_web")
        return s.attrs["Version"]["Index"] > version and (s.attrs.get("UpdateStatus") or {}).get(
            "State") in ("completed", None)
    return check


async def test_a_rolling_restart_of_web_under_load_loses_no_request(stack):
    client, _, _ = stack

    def restart() -> None:
        service = client.services.get(f"{STACK}_web")
        version = service.attrs["Version"]["Index"]
        service.force_update()
        wait_until(_rolled(client, version), 120, "the rolling restart to complete", 0.5)

    result, before, lowest = await _under_load(client, CLIENTS, restart)
    print(f"\nrolling restart: {result.ok} ok, {len(result.failed)} failed, replicas {before} -> min {lowest}")
    assert result.failed == [] and result.ok > 1000


def _serving_container(client):
    """The oldest healthy web container: one the balancer surely serves from. (The newest may still be
    starting, out of the pool, and `limit=` would also list containers that have stopped.)"""
    containers = client.containers.list(filters={"label": f"com.docker.swarm.service.name={STACK}_web",
                                                 "status": "running", "health": "healthy"})
    return min(containers, key=lambda c: c.attrs["Created"])


async def test_a_killed_web_task_under_load_loses_no_request(stack):
    client, _, _ = stack

    def kill() -> None:
        _serving_container(client).kill()

    result, before, lowest = await _under_load(client, CLIENTS, kill, settle=8.0)
    print(f"\nkilled task: {result.ok} ok, {len(result.failed)} failed {result.failed[:3]}")
    assert result.failed == [] and result.ok > 1000


async def test_a_paused_web_task_under_load_loses_no_request(stack):
    """`docker pause` freezes a task: its connections stay open and nothing answers. Its requests must
    move to the other tasks after LB_STALL_AFTER (1 s here), not wait for LB_UPSTREAM_TIMEOUT (60 s)
    or for the unpause: Docker runs no health check on a paused container, so Swarm never replaces it.
    A request that takes 8 s fails here (the stall time is also 10x the backend's latency: 1-3 s)."""
    client, _, _ = stack
    paused = []

    def pause() -> None:
        container = _serving_container(client)
        container.pause()
        paused.append(container)

    try:
        result, before, _ = await _under_load(client, CLIENTS, pause, settle=14.0, timeout=8.0)
    finally:
        for container in paused:
            with suppress(Exception):
                container.unpause()
    print(f"\npaused task: {result.ok} ok, {len(result.failed)} failed {result.failed[:3]}, replicas {before}")
    assert paused and result.failed == [] and result.ok > 1000


async def test_a_redeploy_under_load_keeps_the_replicas_and_loses_no_request(stack):
    client, relay, _ = stack
    env = dict(os.environ, **SETTINGS, SWARMSCALE_STACK=STACK, LB_PUBLISHED_PORT=str(PORT),
               LB_ADMIN_PUBLISHED_PORT=str(ADMIN_PORT), LB_DOCKER_SOCKET=str(relay.path),
               WEB_DRAIN_MS="2100")   # a changed setting: the re-deploy also rolls web onto a new spec

    def lb_task() -> str:
        return next(t["ID"] for t in client.services.get(f"{STACK}_lb").tasks(filters={"desired-state": "running"}))

    lb_before = lb_task()

    deployed: list[tuple[int, int]] = []

    def redeploy() -> None:
        version = client.services.get(f"{STACK}_web").attrs["Version"]["Index"]
        read = replicas_of(client, f"{STACK}_web")
        swarm_sh("up", env)
        deployed.append((read, replicas_of(client, f"{STACK}_web")))   # what the deploy itself left
        wait_until(_rolled(client, version), 120, "the re-deploy's rolling update to complete", 0.5)

    result, before, lowest = await _under_load(client, CLIENTS, redeploy)
    kinds = Counter(f[:40] for f in result.failed)
    [(read, after)] = deployed
    print(f"\nre-deploy: {result.ok} ok, {len(result.failed)} failed {dict(kinds)}, replicas {read} -> {after} "
          f"by the deploy (fewest while it rolled, policy included: {lowest}), balancer task "
          f"{'kept' if lb_task() == lb_before else 'replaced'}")
    assert result.failed == [] and result.ok > 1000
    assert after >= 0.8 * read                     # the deploy kept the count (Swarm alone would set 1)
    assert lb_task() == lb_before                  # an unchanged balancer is not restarted


# Last in the file: it replaces the balancer the tests above share.
async def test_a_redeploy_that_changes_the_balancer_returns_once_the_new_one_alone_serves(stack):
    """swarm.sh up after a balancer setting changed: the task is replaced (stop-first, host-mode
    ports), and up returns only once that is done, so what runs next meets the new balancer."""
    client, relay, _ = stack
    env = dict(os.environ, **SETTINGS, SWARMSCALE_STACK=STACK, LB_PUBLISHED_PORT=str(PORT),
               LB_ADMIN_PUBLISHED_PORT=str(ADMIN_PORT), LB_DOCKER_SOCKET=str(relay.path),
               LB_TUNNEL_TIMEOUT="3599", WEB_DRAIN_MS="2100")   # only the balancer's spec changes

    def lb_containers() -> list[str]:
        """Task ids of the balancer's containers that run now."""
        return [c.labels["com.docker.swarm.task.id"] for c in client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={STACK}_lb"})]

    [before] = lb_containers()
    await asyncio.to_thread(swarm_sh, "up", env)
    # At once, no waiting: the old task is gone, one new one runs, and it serves.
    running = lb_containers()
    assert len(running) == 1 and running[0] != before, running
    spec = client.services.get(f"{STACK}_lb").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "LB_TUNNEL_TIMEOUT=3599" in spec
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{PORT}/") as response:
            assert response.status == 200
