"""The Swarm orchestrator: the only code that talks to the Docker engine.

It uses the official `docker` package's low-level client. Its calls block, so each runs on a small
dedicated thread pool (a slow engine never ties up the loop's default executor) and is bounded by
LB_DOCKER_TIMEOUT. Every failure becomes an OrchestratorError with a short message.

Health: where the image has a HEALTHCHECK, the engine keeps a task in state `starting` until its
container is healthy, and fails the task when it turns unhealthy. So "desired running and state
running" already means "healthy", on every node, without inspecting containers one by one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from lb.config import Config
from lb.orchestrators.base import BackendInfo, Catalog, Orchestrator, OrchestratorError, ServiceInfo

log = logging.getLogger("lb.swarm")

T = TypeVar("T")

#: Engine API version: every call used here exists in 1.41 (Docker 20.10), which newer engines still
#: serve. Pinned so the client makes no version call when it is created (the engine may be down).
API_VERSION = "1.41"
STACK_LABEL = "com.docker.stack.namespace"
#: The label a service carries to be balanced in the multi-service mode (lb.routing.labels.ENABLE).
ENABLE_LABEL = "swarmscale.enable"
#: Attempts at an update when the engine answers "update out of sequence" (someone else wrote first).
SCALE_ATTEMPTS = 5

_CONTAINER_IN_MOUNTINFO = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)")
_CONTAINER_IN_CGROUP = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?$", re.MULTILINE)


def own_container_id() -> str | None:
    """This process's container id, when it runs in a Docker container; None otherwise.

    The engine bind-mounts /etc/hostname from /var/lib/docker/containers/<id>/ (mountinfo, works on
    cgroup v1 and v2); the cgroup path names it on cgroup v1; the hostname is its first 12
    characters unless the service sets another.
    """
    for path, pattern in (("/proc/self/mountinfo", _CONTAINER_IN_MOUNTINFO),
                          ("/proc/self/cgroup", _CONTAINER_IN_CGROUP)):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                match = pattern.search(f.read())
        except OSError:
            continue
        if match:
            return match.group(1)
    hostname = socket.gethostname()
    if re.fullmatch(r"[0-9a-f]{12}", hostname):
        return hostname
    return None


@dataclass
class _Self:
    """What the balancer knows about its own container (nothing when it is not in one)."""

    namespace: str | None = None        # its stack, from the container's label
    network_ids: frozenset[str] = frozenset()


class _Engine:
    """A client of the engine: calls run on a small dedicated thread pool, bounded, errors explained."""

    def __init__(self, config: Config, client: docker.APIClient | None, container_id: str | None) -> None:
        self.config = config
        self._client = client
        self._container_id = own_container_id() if container_id == "auto" else container_id
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="docker")
        self._self: _Self | None = None

    # --- plumbing ------------------------------------------------------------------------------
    def _api(self) -> docker.APIClient:
        if self._client is None:
            # The client passes its timeout to `requests`, which takes seconds as a float too.
            timeout: Any = self.config.docker_timeout
            self._client = docker.APIClient(base_url=self.config.docker_host, version=API_VERSION,
                                            timeout=timeout)
        return self._client

    async def _call(self, what: str, fn: Callable[[], T], calls: int = 2) -> T:
        """Run blocking engine calls off the loop, bounded; any failure -> OrchestratorError.

        The client's timeout (LB_DOCKER_TIMEOUT) bounds each HTTP call; `calls` of them bound the
        whole. A thread given up on ends by itself at its own timeout.
        """
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, fn),
                                          self.config.docker_timeout * calls)
        except OrchestratorError:
            raise
        except TimeoutError:
            raise OrchestratorError(f"{what}: the Docker engine did not answer in time") from None
        except docker.errors.APIError as exc:
            raise OrchestratorError(f"{what}: {_explain(exc)}") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise OrchestratorError(f"{what}: Docker engine unreachable ({_short(exc)})") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _whoami_sync(self) -> _Self:
        if self._self is not None:
            return self._self
        me = _Self()
        if self._container_id:
            try:
                info = self._api().inspect_container(self._container_id)
            except docker.errors.NotFound:
                info = None   # a container, but not one of this engine's: treat as outside
            if info:
                labels = (info.get("Config") or {}).get("Labels") or {}
                networks = ((info.get("NetworkSettings") or {}).get("Networks") or {}).values()
                me = _Self(labels.get(STACK_LABEL) or None,
                           frozenset(n.get("NetworkID", "") for n in networks if n.get("NetworkID")))
        self._self = me
        return me


class SwarmCatalog(_Engine, Catalog):
    """The services labelled swarmscale.enable that share a network with the balancer (LB_STACK: one stack)."""

    def __init__(self, config: Config, *,
                 client: docker.APIClient | None = None, container_id: str | None = "auto") -> None:
        super().__init__(config, client, container_id)

    async def labelled_services(self) -> list[ServiceInfo]:
        return await self._call("list labelled services", self._labelled_sync)

    def _labelled_sync(self) -> list[ServiceInfo]:
        me = self._whoami_sync()
        found = []
        for service in self._api().services(filters={"label": ENABLE_LABEL}):
            spec = service["Spec"]
            labels = spec.get("Labels") or {}
            stack = labels.get(STACK_LABEL)
            if self.config.stack and stack != self.config.stack:
                continue
            networks = (spec.get("TaskTemplate") or {}).get("Networks") or spec.get("Networks") or []
            targets = {n.get("Target") for n in networks}
            if me.network_ids and not targets & me.network_ids:
                continue   # it cannot be reached from here: not ours to balance
            found.append(ServiceInfo(spec["Name"], labels, service["ID"], stack))
        found.sort(key=lambda s: s.name)
        return found

    def orchestrator(self, config: Config) -> Orchestrator:
        return SwarmOrchestrator(config, container_id=self._container_id)


class SwarmOrchestrator(_Engine, Orchestrator):
    """Scales and lists the tasks of one service (LB_SERVICE, or a labelled one) through the engine API."""

    can_scale = True

    def __init__(self, config: Config, *,
                 client: docker.APIClient | None = None, container_id: str | None = "auto") -> None:
        """`container_id`: "auto" finds the balancer's own container; None means not in one."""
        if not config.service:
            raise OrchestratorError("LB_SERVICE is empty: nothing to orchestrate")
        super().__init__(config, client, container_id)
        self._service_id: str | None = None
        self.service_name: str | None = None   # the full name, once resolved
        self.update_conflicts = 0              # "update out of sequence" answers, retried
        self._task_errors: list[tuple[float, str]] = []   # (Unix time, error) as of the last look

    # --- resolving the service -----------------------------------------------------------------

    def _find_service_sync(self, name: str) -> dict[str, Any] | None:
        # The engine's name filter matches prefixes: keep the exact match only.
        for service in self._api().services(filters={"name": name}):
            if service["Spec"]["Name"] == name:
                return service
        return None

    def _service_sync(self) -> dict[str, Any]:
        """The service's current inspect document; resolves LB_SERVICE the first time."""
        api = self._api()
        if self._service_id is not None:
            try:
                service = api.inspect_service(self._service_id)
            except docker.errors.NotFound:
                self._service_id = None
                raise OrchestratorError(f"service {self.service_name} no longer exists") from None
            _check_mode(service)
            return service
        wanted = self.config.service
        me = self._whoami_sync()
        candidates = [wanted]
        if me.namespace and not wanted.startswith(me.namespace + "_"):
            candidates.insert(0, f"{me.namespace}_{wanted}")   # the short name used in the stack file
        for name in candidates:
            service = self._find_service_sync(name)
            if service is not None:
                _check_mode(service)
                self._service_id = service["ID"]
                self.service_name = name
                log.info("service resolved", extra={"service": name, "service_id": service["ID"],
                                                    "stack": me.namespace})
                return service
        raise OrchestratorError(f"LB_SERVICE={wanted!r}: no such service (looked for {', '.join(candidates)})")

    async def resolve(self) -> str:
        """The service's full name (resolving LB_SERVICE within the balancer's stack)."""
        await self._call("resolve service", self._service_sync)
        assert self.service_name is not None
        return self.service_name

    # --- the interface -------------------------------------------------------------------------
    async def current_replicas(self) -> int:
        service = await self._call("read service", self._service_sync)
        return int(service["Spec"]["Mode"]["Replicated"].get("Replicas", 0))

    async def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise OrchestratorError(f"scale to {replicas}: expects a count >= 0")
        await self._call(f"scale to {replicas}", lambda: self._scale_sync(replicas), calls=2 * SCALE_ATTEMPTS)

    def _scale_sync(self, replicas: int) -> bool:
        """Set only the replica count, at the version just read. True when it changed anything."""
        api: Any = self._api()   # its private helpers post a spec as read, untouched
        for _ in range(SCALE_ATTEMPTS):
            service = self._service_sync()
            spec = service["Spec"]
            if spec["Mode"]["Replicated"].get("Replicas") == replicas:
                return False
            # The spec exactly as read, one field changed: nothing else of the service is touched
            # (docker-py's update_service rebuilds the spec from its arguments, which would be lossy).
            spec["Mode"]["Replicated"]["Replicas"] = replicas
            version = service["Version"]["Index"]
            try:
                response = api._post_json(api._url("/services/{0}/update", service["ID"]), data=spec,
                                          params={"version": version})
                api._raise_for_status(response)
            except docker.errors.APIError as exc:
                if "out of sequence" in _explain(exc):
                    self.update_conflicts += 1   # someone updated it since we read it: read again
                    continue
                raise
            log.info("service scaled", extra={"service": self.service_name, "replicas": replicas,
                                              "version": version})
            return True
        raise OrchestratorError(f"scale to {replicas}: update still out of sequence after {SCALE_ATTEMPTS} reads")

    async def running_backends(self) -> list[BackendInfo]:
        return await self._call("list tasks", self._backends_sync, calls=3)

    def _backends_sync(self) -> list[BackendInfo]:
        service = self._service_sync()
        # Every task, not only those desired running: a rejected one is desired "ready" or "shutdown".
        tasks = self._api().tasks(filters={"service": service["ID"]})
        self._task_errors = _task_errors(tasks)
        port = self.config.backend_port
        network = None
        backends = []
        for task in tasks:
            if task.get("DesiredState") != "running" or (task.get("Status") or {}).get("State") != "running":
                continue
            attachments = [a for a in task.get("NetworksAttachments") or [] if not _is_ingress(a)]
            if not attachments:
                continue
            if network is None:
                network = self._pick_network(attachments)
            for attachment in attachments:
                if attachment["Network"]["ID"] == network:
                    for cidr in attachment.get("Addresses") or []:
                        ip = cidr.split("/", 1)[0]
                        host = f"[{ip}]" if ":" in ip else ip
                        backends.append(BackendInfo(f"{host}:{port}", task["ID"]))
                        break
        backends.sort(key=lambda b: b.address)
        return backends

    def start_error(self, since_wall: float) -> str | None:
        for at, error in self._task_errors:
            if at >= since_wall:
                return error
        return None

    def _pick_network(self, attachments: list[dict[str, Any]]) -> str:
        """The network whose addresses the balancer can reach: LB_NETWORK, else the one it shares."""
        wanted = self.config.network
        me = self._whoami_sync()
        if wanted:
            names = {wanted, f"{me.namespace}_{wanted}"} if me.namespace else {wanted}
            for a in attachments:
                if a["Network"]["ID"] == wanted or a["Network"]["Spec"]["Name"] in names:
                    return a["Network"]["ID"]
            raise OrchestratorError(f"LB_NETWORK={wanted!r}: the service's tasks are not on it "
                                    f"(they are on {', '.join(_names(attachments))})")
        if me.network_ids:
            shared = [a for a in attachments if a["Network"]["ID"] in me.network_ids]
            if not shared:
                raise OrchestratorError(f"the balancer shares no network with {self.service_name} "
                                        f"(its tasks are on {', '.join(_names(attachments))})")
        else:
            shared = attachments   # not in a container (tests, tools): any of the service's networks
        if len(shared) > 1:
            raise OrchestratorError(f"{self.service_name} is on several networks ({', '.join(_names(shared))}): "
                                    "set LB_NETWORK to the one to reach it on")
        return shared[0]["Network"]["ID"]


_FAILED = ("failed", "rejected")


def _task_errors(tasks: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(Unix time the task was created, error) of tasks that failed or were rejected, newest first.

    Timed by creation, not failure: a start fails in a task created for it, while a task that ran
    for an hour and was then killed (at one replica, with requests held for its replacement) is no
    failed start. A task pending with an error (it cannot be scheduled) counts as failing now.
    """
    out = []
    for task in tasks:
        status = task.get("Status") or {}
        state, error = status.get("State"), status.get("Err") or ""
        if state in _FAILED or (state == "pending" and error and task.get("DesiredState") == "running"):
            at = float("inf") if state == "pending" else _unix(task.get("CreatedAt", ""))
            out.append((at, f"task {state}: {error or status.get('Message') or 'no reason given'}"))
    out.sort(key=lambda e: e[0], reverse=True)
    return out


def _unix(stamp: str) -> float:
    """An engine timestamp (RFC 3339 with nanoseconds) as Unix time; 0 when unreadable."""
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        base = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
        return base.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)
    except ValueError:
        return 0.0


def _check_mode(service: dict[str, Any]) -> None:
    mode = service["Spec"].get("Mode") or {}
    if "Replicated" not in mode:
        kind = next(iter(mode), "unknown").lower()
        raise OrchestratorError(f"service {service['Spec']['Name']} is in {kind} mode: "
                                "only a replicated service can be scaled (its replicas are not a count to set)")


def _is_ingress(attachment: dict[str, Any]) -> bool:
    network = attachment.get("Network") or {}
    return bool(network.get("Spec", {}).get("Ingress")) or network.get("Spec", {}).get("Name") == "ingress"


def _names(attachments: list[dict[str, Any]]) -> list[str]:
    return [a["Network"]["Spec"]["Name"] for a in attachments]


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
