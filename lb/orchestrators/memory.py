"""An orchestrator that keeps everything in memory.

In `LB_BACKENDS` mode it records the replica count the policy wants and changes nothing: the
backends are the static list. The unit tests use it in place of a Swarm, and may make it fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lb.orchestrators.base import BackendInfo, Catalog, Orchestrator, OrchestratorError, ServiceInfo

if TYPE_CHECKING:
    from lb.config import Config


class MemoryOrchestrator(Orchestrator):
    def __init__(self, backends: list[str] | None = None, replicas: int | None = None,
                 can_scale: bool = True) -> None:
        self.backends = list(backends or [])
        self.replicas = len(self.backends) if replicas is None else replicas
        self.can_scale = can_scale
        self.scale_calls: list[int] = []
        #: Set to an exception to make every call raise it (an unreachable engine).
        self.failure: OrchestratorError | None = None

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def current_replicas(self) -> int:
        self._check()
        return self.replicas

    async def scale(self, replicas: int) -> None:
        self._check()
        self.scale_calls.append(replicas)
        self.replicas = replicas

    async def running_backends(self) -> list[BackendInfo]:
        self._check()
        return [BackendInfo(address) for address in self.backends]


class MemoryCatalog(Catalog):
    """Labelled services kept in memory: tests set `services` and each one's orchestrator."""

    def __init__(self) -> None:
        self.services: list[ServiceInfo] = []
        self.orchestrators: dict[str, MemoryOrchestrator] = {}
        self.failure: OrchestratorError | None = None

    def add(self, name: str, labels: dict[str, str], backends: list[str]) -> MemoryOrchestrator:
        self.services = [s for s in self.services if s.name != name] + [ServiceInfo(name, labels)]
        orchestrator = self.orchestrators.setdefault(name, MemoryOrchestrator(backends))
        orchestrator.backends = list(backends)
        return orchestrator

    def remove(self, name: str) -> None:
        self.services = [s for s in self.services if s.name != name]

    async def labelled_services(self) -> list[ServiceInfo]:
        if self.failure is not None:
            raise self.failure
        return list(self.services)

    def orchestrator(self, config: Config) -> Orchestrator:
        return self.orchestrators.setdefault(config.service, MemoryOrchestrator([]))
