"""SwarmOrchestrator against the real engine: throwaway services, scaled and listed through it.

Everything is created under a random prefix with the label `swarmscale.test=orchestrator` and
removed at the end. No traffic is sent to the tasks; their addresses are compared with the engine's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lb.config import Config
from lb.orchestrators.base import OrchestratorError
from lb.orchestrators.swarm import STACK_LABEL, SwarmOrchestrator
from tests.e2e.conftest import TEST_LABEL, wait_until

pytestmark = pytest.mark.e2e

docker = pytest.importorskip("docker")

LABELS = {TEST_LABEL: "orchestrator"}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.25)


class Throwaway:
    """Creates services, networks and containers under one prefix; removes them all."""

    def __init__(self, client, web_image: str) -> None:
        self.client = client
        self.web_image = web_image
        # SWARMSCALE_E2E_PREFIX: checkouts sharing one engine keep their names apart (ssr*, ssz*).
        self.prefix = f"{os.environ.get('SWARMSCALE_E2E_PREFIX', 'sso')}{uuid.uuid4().hex[:6]}"
        self.services: list = []
        self.networks: list = []
        self.containers: list = []

    def network(self, suffix: str):
        network = self.client.networks.create(f"{self.prefix}-{suffix}", driver="overlay", attachable=True,
                                              labels=LABELS)
        self.networks.append(network)
        return network

    def service(self, suffix: str, *, networks: list[str], replicas: int | None = 1,
                healthcheck=None, name: str | None = None):
        mode = docker.types.ServiceMode("global") if replicas is None else \
            docker.types.ServiceMode("replicated", replicas)
        service = self.client.services.create(
            self.web_image, name=name or f"{self.prefix}-{suffix}", mode=mode, networks=networks,
            env=["WEB_LATENCY_MS=0", "WEB_DRAIN_MS=0"], labels=LABELS, healthcheck=healthcheck,
            stop_grace_period=1_000_000_000)
        self.services.append(service)
        return service

    def _leftovers(self) -> list:
        # sparse: the engine's list alone. A full list inspects each container, and one that is
        # removed between the list and its inspect raised NotFound here (a race, not a failure).
        return [c for c in self.client.containers.list(all=True, sparse=True)
                if _labels(c).get(TEST_LABEL) == "orchestrator"
                or _labels(c).get("com.docker.swarm.service.name", "").startswith(self.prefix)]

    def remove_all(self) -> None:
        for service in self.services:
            try:
                service.remove()
            except docker.errors.NotFound:
                pass
        for container in self.containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        # A network can go only once the tasks on it are gone.
        wait_until(lambda: not self._leftovers(), 60, "the test's containers to be removed")
        for network in self.networks:
            wait_until(lambda network=network: _try_remove(network), 30, f"network {network.name} to be removed")


def _labels(container) -> dict:
    return container.attrs.get("Labels") or {}


def _try_remove(network) -> bool:
    try:
        network.remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False   # still has endpoints for a moment after the tasks stop
    return True


@pytest.fixture
def throwaway(engine, images):
    made = Throwaway(engine, images["web"])
    yield made
    made.remove_all()


def config_for(service: str, **env: str) -> Config:
    return Config.from_env({"LB_SERVICE": service, "LB_DOCKER_TIMEOUT": "10", **env})


def spec_of(client, service_id: str) -> dict:
    return client.api.inspect_service(service_id)


def running_tasks(client, service_id: str) -> list[dict]:
    return [t for t in client.api.tasks(filters={"service": service_id, "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def addresses_on(tasks: list[dict], network_id: str, port: int = 8000) -> list[str]:
    found = []
    for task in tasks:
        for attachment in task.get("NetworksAttachments") or []:
            if attachment["Network"]["ID"] == network_id:
                found.append(f"{attachment['Addresses'][0].split('/')[0]}:{port}")
    return sorted(found)


async def test_scales_only_the_replica_count_and_lists_running_tasks(engine, throwaway):
    net = throwaway.network("net")
    service = throwaway.service("web", networks=[net.id])
    orchestrator = SwarmOrchestrator(config_for(service.name), container_id=None)
    try:
        assert await orchestrator.current_replicas() == 1
        before = spec_of(engine, service.id)

        await orchestrator.scale(3)
        after = spec_of(engine, service.id)
        assert after["Spec"]["Mode"] == {"Replicated": {"Replicas": 3}}
        assert {k: v for k, v in after["Spec"].items() if k != "Mode"} == \
            {k: v for k, v in before["Spec"].items() if k != "Mode"}, "only the replica count may change"
        assert await orchestrator.current_replicas() == 3

        await orchestrator.scale(3)   # nothing to change: no update, the version stays
        assert spec_of(engine, service.id)["Version"]["Index"] == after["Version"]["Index"]

        backends = await eventually(lambda: _when_n(orchestrator, 3), 60, "3 running backends")
        net.reload()
        ipam = net.attrs["IPAM"]["Config"] or []
        subnet = ipaddress.ip_network(ipam[0]["Subnet"]) if ipam else None
        assert [b.address for b in backends] == addresses_on(running_tasks(engine, service.id), net.id)
        for backend in backends:
            host, port = backend.address.rsplit(":", 1)
            assert port == "8000"
            if subnet is not None:
                assert ipaddress.ip_address(host) in subnet
            assert backend.task_id

        await orchestrator.scale(1)
        backends = await eventually(lambda: _when_n(orchestrator, 1), 60, "1 running backend")
        assert spec_of(engine, service.id)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    finally:
        await orchestrator.close()


async def _when_n(orchestrator: SwarmOrchestrator, n: int):
    backends = await orchestrator.running_backends()
    return backends if len(backends) == n else None


async def test_retries_when_the_update_is_out_of_sequence(engine, throwaway):
    net = throwaway.network("net")
    service = throwaway.service("web", networks=[net.id])
    orchestrator = SwarmOrchestrator(config_for(service.name), container_id=None)
    api = orchestrator._api()
    real_post = api._post_json
    interfered = []

    def post_after_someone_else(url, data=None, **kwargs):
        # Another writer updates the service between our read and our write, once.
        if "/update" in url and not interfered:
            current = engine.api.inspect_service(service.id)
            spec = current["Spec"]
            spec.setdefault("Labels", {})["other.writer"] = "was-here"
            engine.api._raise_for_status(engine.api._post_json(
                engine.api._url("/services/{0}/update", service.id), data=spec,
                params={"version": current["Version"]["Index"]}))
            interfered.append(True)
        return real_post(url, data=data, **kwargs)

    api._post_json = post_after_someone_else
    try:
        await orchestrator.scale(2)
        assert interfered
        assert orchestrator.update_conflicts == 1
        spec = spec_of(engine, service.id)["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 2
        assert spec["Labels"]["other.writer"] == "was-here", "the other writer's change must survive"
    finally:
        await orchestrator.close()


async def test_refuses_a_global_service(engine, throwaway):
    net = throwaway.network("net")
    service = throwaway.service("everywhere", networks=[net.id], replicas=None)
    orchestrator = SwarmOrchestrator(config_for(service.name), container_id=None)
    version = spec_of(engine, service.id)["Version"]["Index"]
    try:
        with pytest.raises(OrchestratorError, match="global mode"):
            await orchestrator.current_replicas()
        with pytest.raises(OrchestratorError, match="global mode"):
            await orchestrator.scale(3)
        with pytest.raises(OrchestratorError, match="global mode"):
            await orchestrator.running_backends()
        assert spec_of(engine, service.id)["Version"]["Index"] == version
    finally:
        await orchestrator.close()


async def test_unknown_service_and_unreachable_engine_are_orchestrator_errors(engine, throwaway):
    orchestrator = SwarmOrchestrator(config_for(f"{throwaway.prefix}-missing"), container_id=None)
    with pytest.raises(OrchestratorError, match="no such service"):
        await orchestrator.current_replicas()
    await orchestrator.close()
    gone = SwarmOrchestrator(config_for("web", LB_DOCKER_HOST="unix:///nonexistent/docker.sock",
                                        LB_DOCKER_TIMEOUT="1"), container_id=None)
    started = time.monotonic()
    with pytest.raises(OrchestratorError, match="unreachable"):
        await gone.scale(2)
    assert time.monotonic() - started < 5
    await gone.close()


async def test_unhealthy_tasks_get_no_traffic(engine, throwaway):
    net = throwaway.network("net")
    never = docker.types.Healthcheck(test=["CMD", "false"], interval=500_000_000, timeout=500_000_000, retries=1)
    service = throwaway.service("sick", networks=[net.id], replicas=2, healthcheck=never)
    orchestrator = SwarmOrchestrator(config_for(service.name), container_id=None)
    try:
        # Containers exist and run their process, but the health check never passes.
        wait_until(lambda: engine.api.tasks(filters={"service": service.id}), 30, "tasks to be created")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert await orchestrator.running_backends() == []
            await asyncio.sleep(0.5)
    finally:
        await orchestrator.close()


async def test_healthy_tasks_are_listed_once_healthy(engine, throwaway):
    net = throwaway.network("net")
    service = throwaway.service("web", networks=[net.id], replicas=2)   # the image's own HEALTHCHECK
    orchestrator = SwarmOrchestrator(config_for(service.name), container_id=None)
    try:
        backends = await eventually(lambda: _when_n(orchestrator, 2), 60, "2 healthy backends")
        listed = {b.task_id for b in backends}
        for task in engine.api.tasks(filters={"service": service.id}):
            if task["ID"] in listed:
                container = engine.api.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"])
                assert container["State"]["Health"]["Status"] == "healthy"
    finally:
        await orchestrator.close()


async def test_several_networks_need_lb_network(engine, throwaway):
    front, back = throwaway.network("front"), throwaway.network("back")
    service = throwaway.service("web", networks=[front.id, back.id])
    ambiguous = SwarmOrchestrator(config_for(service.name), container_id=None)
    chosen = SwarmOrchestrator(config_for(service.name, LB_NETWORK=back.name), container_id=None)
    try:
        await eventually(lambda: asyncio.to_thread(running_tasks, engine, service.id), 60, "a running task")
        with pytest.raises(OrchestratorError, match="LB_NETWORK"):
            await ambiguous.running_backends()
        backends = await chosen.running_backends()
        assert [b.address for b in backends] == addresses_on(running_tasks(engine, service.id), back.id)
    finally:
        await ambiguous.close()
        await chosen.close()


async def test_short_name_resolves_within_the_balancers_stack(engine, throwaway):
    """Run as if from a container of stack <prefix>: `web` means `<prefix>_web`, on the shared network."""
    net, other = throwaway.network("net"), throwaway.network("other")
    stack = throwaway.prefix
    service = throwaway.service("", networks=[net.id, other.id], name=f"{stack}_web")
    bystander = throwaway.service("", networks=[net.id], name=f"{stack}-web")  # a near miss of the name
    me = engine.containers.run(throwaway.web_image, ["sleep", "300"], detach=True, network=net.name,
                               labels={**LABELS, STACK_LABEL: stack})
    throwaway.containers.append(me)
    orchestrator = SwarmOrchestrator(config_for("web"), container_id=me.id)
    try:
        assert await orchestrator.resolve() == f"{stack}_web"
        backends = await eventually(lambda: _when_n(orchestrator, 1), 60, "1 running backend")
        # Two networks, but only one shared with "the balancer": no LB_NETWORK needed.
        assert [b.address for b in backends] == addresses_on(running_tasks(engine, service.id), net.id)
        assert spec_of(engine, bystander.id)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    finally:
        await orchestrator.close()


def _run_in_lb_image(engine, images, throwaway, script: str, **kwargs) -> tuple[str, str]:
    """Run a Python snippet in the balancer's image; (container id, its standard output)."""
    container = engine.containers.run(images["lb"], ["python3", "-c", script], detach=True,
                                      labels=LABELS, **kwargs)
    throwaway.containers.append(container)
    result = container.wait(timeout=60)
    output = container.logs(stdout=True, stderr=False).decode().strip()
    assert result["StatusCode"] == 0, container.logs().decode()
    return container.id, output


def test_the_balancer_finds_its_own_container(engine, images, throwaway):
    script = "from lb.orchestrators.swarm import own_container_id; print(own_container_id())"
    container_id, output = _run_in_lb_image(engine, images, throwaway, script)
    assert output == container_id


def test_without_the_socket_dns_lists_the_tasks(engine, images, throwaway):
    """The fallback, from a container on the service's network with no engine socket."""
    net = throwaway.network("net")
    service = throwaway.service("web", networks=[net.id], replicas=2)
    wait_until(lambda: len(running_tasks(engine, service.id)) == 2, 60, "2 running tasks")
    script = (
        "import asyncio\n"
        "from lb.config import Config\n"
        "from lb.discovery import DnsDiscovery, choose_orchestrator\n"
        "config = Config.from_env()\n"
        "orchestrator = choose_orchestrator(config)\n"
        "assert isinstance(orchestrator, DnsDiscovery) and not orchestrator.can_scale\n"
        "print(' '.join(b.address for b in asyncio.run(orchestrator.running_backends())))\n")
    _, output = _run_in_lb_image(engine, images, throwaway, script, network=net.name,
                                 environment={"LB_SERVICE": service.name})
    assert output.split() == addresses_on(running_tasks(engine, service.id), net.id)
