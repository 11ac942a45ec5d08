"""The small interface between the control loop and whatever runs the service's replicas.

The orchestrator is the only code that talks to the Docker engine (`swarm.py`); `memory.py` serves
the unit tests and `LB_BACKENDS` mode.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


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

    async def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the orchestrator holds (clients, threads)."""
