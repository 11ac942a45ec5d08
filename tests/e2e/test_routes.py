"""Several labelled services behind one balancer (LB_SERVICE empty), on the real engine.

A stack that is not the project's: services created through the engine API, running the project's
web image with swarmscale.* labels, and the balancer image beside them on their network. Traffic only
to the balancer's published port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import suppress

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

docker = pytest.importorskip("docker")
from tests.e2e.conftest import TEST_LABEL, wait_until  # noqa: E402

PREFIX = os.environ.get("SWARMSCALE_ROUTES_STACK", "ssr1")
PORT = int(os.environ.get("SWARMSCALE_ROUTES_PORT", "38080"))
ADMIN_PORT = PORT + 1
NETWORK = f"{PREFIX}_net"
ALPHA = {"swarmscale.enable": "true", "swarmscale.rule": "Host(`alpha.test`)",
         "swarmscale.target-inflight": "8", "swarmscale.max-replicas": "6"}
BETA = {"swarmscale.enable": "true", "swarmscale.rule": "Host(`beta.test`) && PathPrefix(`/api`)",
        "swarmscale.min-replicas": "1", "swarmscale.max-replicas": "3"}
LB_ENV = {"LB_SERVICE": "", "LB_STABLE_WINDOW": "20", "LB_PANIC_WINDOW": "4", "LB_SCALE_INTERVAL": "1",
          "LB_DISCOVERY_INTERVAL": "1"}


def web(engine, images, name: str, labels: dict[str, str], replicas: int = 1, latency_ms: int = 50):
    return engine.services.create(
        images["web"], name=f"{PREFIX}_{name}", hostname=f"{name}-{{{{.Task.Slot}}}}",
        env=[f"WEB_LATENCY_MS={latency_ms}", "WEB_DRAIN_MS=2000"], networks=[NETWORK],
        labels={**labels, TEST_LABEL: PREFIX}, mode=docker.types.ServiceMode("replicated", replicas),
        update_config=docker.types.UpdateConfig(parallelism=1, order="start-first"),
        stop_grace_period=30 * 10**9)


def replicas_of(engine, name: str) -> int:
    return engine.services.get(f"{PREFIX}_{name}").attrs["Spec"]["Mode"]["Replicated"]["Replicas"]


def set_labels(engine, name: str, labels: dict[str, str]) -> None:
    service = engine.services.get(f"{PREFIX}_{name}")
    service.update(labels={**labels, TEST_LABEL: PREFIX})


@pytest.fixture(scope="module")
def routed(engine, images):
    for old in engine.services.list(filters={"label": f"{TEST_LABEL}={PREFIX}"}):
        old.remove()
    with suppress(Exception):
        wait_until(lambda: not engine.networks.list(names=[NETWORK]) or _try_remove(engine), 30, "old network gone")
    engine.networks.create(NETWORK, driver="overlay", attachable=True, labels={TEST_LABEL: PREFIX})
    created = [web(engine, images, "alpha", ALPHA), web(engine, images, "beta", BETA)]
    lb = engine.services.create(
        images["lb"], name=f"{PREFIX}_lb", env=[f"{k}={v}" for k, v in LB_ENV.items()], networks=[NETWORK],
        labels={TEST_LABEL: PREFIX}, constraints=["node.role == manager"],
        mounts=["/var/run/docker.sock:/var/run/docker.sock:rw"],
        endpoint_spec=docker.types.EndpointSpec(ports={PORT: (8080, "tcp", "host"),
                                                       ADMIN_PORT: (8081, "tcp", "host")}))
    created.append(lb)
    try:
        wait_until(lambda: _routes_ready(), 120, "the balancer serving alpha and beta", 0.5)
        yield engine
    finally:
        for service in engine.services.list(filters={"label": f"{TEST_LABEL}={PREFIX}"}):
            with suppress(Exception):
                service.remove()
        with suppress(Exception):
            wait_until(lambda: _try_remove(engine), 60, "network removed", 0.5)


def _try_remove(engine) -> bool:
    for network in engine.networks.list(names=[NETWORK]):
        try:
            network.remove()
        except Exception:  # noqa: BLE001 - still in use by containers that are stopping
            return False
    return True


def _get_sync(host: str, path: str = "/") -> tuple[int, str]:
    import http.client
    try:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""


def _routes_ready() -> bool:
    return _get_sync("alpha.test")[0] == 200 and _get_sync("beta.test", "/api/x")[0] == 200


async def get(session: aiohttp.ClientSession, host: str, path: str = "/") -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{PORT}{path}", headers={"Host": host}) as r:
        return r.status, await r.text()


async def status() -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{ADMIN_PORT}/status") as r:
            return await r.json()


async def load(host: str, path: str, clients: int, seconds: float, stop: asyncio.Event | None = None,
               ) -> tuple[int, list[str]]:
    ok, failed = 0, []
    deadline = time.monotonic() + seconds
    stop = stop or asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def user() -> None:
            nonlocal ok
            while time.monotonic() < deadline and not stop.is_set() and ok + len(failed) < 200_000:
                try:
                    status, body = await get(session, host, path)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    failed.append(repr(exc))
                    continue
                if status == 200:
                    ok += 1
                else:
                    failed.append(f"{status} {body[:80]!r}")
        await asyncio.gather(*(user() for _ in range(clients)))
    return ok, failed


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> float:
    start = time.monotonic()
    await asyncio.to_thread(wait_until, predicate, timeout, what, interval)
    return time.monotonic() - start


async def test_routes_by_host_and_path_and_others_get_404(routed):
    async with aiohttp.ClientSession() as session:
        status_code, body = await get(session, "alpha.test", "/anything")
        assert status_code == 200 and '"replica": "alpha-' in body
        status_code, body = await get(session, "Beta.Test:38080", "/api/votes")
        assert status_code == 200 and '"replica": "beta-' in body
        status_code, body = await get(session, "beta.test", "/")
        assert status_code == 404 and body == "no route for host beta.test and path /\n"
        assert (await get(session, "gamma.test", "/api"))[0] == 404
    doc = await status()
    names = {s["name"]: s for s in doc["services"]}
    assert names[f"{PREFIX}_alpha"]["rule"] == ALPHA["swarmscale.rule"]
    assert names[f"{PREFIX}_beta"]["error"] is None


async def test_load_on_alpha_scales_alpha_and_leaves_beta_alone(routed):
    engine = routed
    await wait_for(lambda: replicas_of(engine, "alpha") == 1, 90, "alpha at 1 before load")
    start = time.monotonic()
    reached: list[float] = []

    async def watch() -> None:
        while not reached and time.monotonic() - start < 30:
            if await asyncio.to_thread(replicas_of, engine, "alpha") >= 4:
                reached.append(time.monotonic() - start)
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    ok, failed = await load("alpha.test", "/", 32, 30)
    await watcher
    print(f"\nalpha reached 4 replicas after {reached[0] if reached else None} s; {ok} requests")
    assert failed == []
    assert reached and reached[0] <= 20
    assert replicas_of(engine, "beta") == 1


async def test_a_changed_rule_label_routes_within_2_s(routed):
    engine = routed
    new = {**BETA, "swarmscale.rule": "Host(`beta2.test`) || PathPrefix(`/b2`)"}
    changed = time.monotonic()
    await asyncio.to_thread(set_labels, engine, "beta", new)
    took = await wait_for(lambda: _get_sync("beta2.test")[0] == 200, 10, "the new rule routing")
    took = time.monotonic() - changed
    print(f"\nnew rule routing after {took:.2f} s")
    assert _get_sync("beta.test", "/api/x")[0] == 404
    assert _get_sync("x.test", "/b2/y")[0] == 200
    assert took <= 2.0
    await asyncio.to_thread(set_labels, engine, "beta", BETA)
    await wait_for(lambda: _get_sync("beta.test", "/api/x")[0] == 200, 10, "the old rule back")


async def test_a_bad_rule_beside_a_good_one(routed, images):
    engine = routed
    bad = web(engine, images, "bad", {"swarmscale.enable": "true", "swarmscale.rule": "Host(`bad.test`"})
    try:
        await wait_for(lambda: any(s["name"] == f"{PREFIX}_bad" and s["error"]
                                   for s in asyncio.run(status())["services"]), 10, "the error in /status")
        assert _get_sync("bad.test")[0] == 404
        assert _get_sync("alpha.test")[0] == 200
    finally:
        bad.remove()


async def test_a_service_removed_and_added_again(routed, images):
    engine = routed
    engine.services.get(f"{PREFIX}_beta").remove()
    took = await wait_for(lambda: _get_sync("beta.test", "/api/x")[0] == 404, 10, "beta's route gone")
    assert took <= 2.5 and _get_sync("alpha.test")[0] == 200
    web(engine, images, "beta", BETA)
    await wait_for(lambda: _get_sync("beta.test", "/api/x")[0] == 200, 60, "beta routed again")


async def test_rolling_update_of_one_service_under_load_fails_no_request(routed):
    engine = routed
    stop = asyncio.Event()
    running = asyncio.create_task(load("alpha.test", "/", 16, 90, stop=stop))
    await asyncio.sleep(3)
    service = engine.services.get(f"{PREFIX}_alpha")
    version = service.attrs["Version"]["Index"]
    await asyncio.to_thread(service.force_update)

    def rolled() -> bool:
        s = engine.services.get(f"{PREFIX}_alpha")
        state = (s.attrs.get("UpdateStatus") or {}).get("State")
        return s.attrs["Version"]["Index"] > version and state in ("completed", None)

    await wait_for(rolled, 80, "alpha's rolling update to complete", 0.5)
    await asyncio.sleep(3)
    stop.set()
    ok, failed = await running
    print(f"\nrolling update under load: {ok} ok, {len(failed)} failed")
    assert failed == [] and ok > 100
