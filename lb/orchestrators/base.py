"""The small interface between the control loop and whatever runs the service's replicas.

The orchestrator is the only code that talks to the Docker engine (`swarm.py`); `memory.py` serves
the unit tests and `LB_BACKENDS` mode.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.config import Config


class OrchestratorError(RuntimeError):
    """The orchestrator could not answer or act (engine unreachable, slow, refused)."""


@dataclass(frozen=True)
class BackendInfo:
    """One running replica the proxy may send traffic to."""

    address: str          # "host:port"
    task_id: str = ""     # the Swarm task, when there is one


class Orchestrator(abc.ABC):
    """Current replicas, scale to n, running backends. Every method may raise OrchestratorError."""

    #: False when this orchestrator cannot change anything (static backends, no socket).
    can_scale: bool = True

    @abc.abstractmethod
    async def current_replicas(self) -> int:
        """The replica count the service is set to (desired, not necessarily running)."""

    @abc.abstractmethod
    async def scale(self, replicas: int) -> None:
        """Set the service's replica count. Called only when the count changes."""

    @abc.abstractmethod
    async def running_backends(self) -> list[BackendInfo]:
        """Replicas that are running (and healthy) and should get traffic now."""

    def start_error(self, since_wall: float) -> str | None:
        """Why the service's tasks fail to start, as the last look at them saw it: a task that failed
        or was rejected at or after `since_wall` (Unix time), or one pending with an error. None if none."""
        return None

    async def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the orchestrator holds (clients, threads)."""


@dataclass(frozen=True)
class ServiceInfo:
    """A service that asks to be balanced (label swarmscale.enable), as the engine lists it."""

    name: str                                   # full name, e.g. "shop_vote"
    labels: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    stack: str | None = None

    @property
    def short_name(self) -> str:
        return self.name.removeprefix(f"{self.stack}_") if self.stack else self.name


class Catalog(abc.ABC):
    """The labelled services (multi-service mode), and an orchestrator for each one."""

    @abc.abstractmethod
    async def labelled_services(self) -> list[ServiceInfo]:
        """Services with a `swarmscale.enable` label that this balancer can reach. May raise OrchestratorError."""

    @abc.abstractmethod
    def orchestrator(self, config: Config) -> Orchestrator:
        """An orchestrator for the one service `config.service` names (full name)."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the catalog holds."""
