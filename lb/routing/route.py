"""A Route: the unit the balancer is made of.

One route = a matcher (its rule), a backend pool (accounting, picking, ejection), the service it
balances and scales (an orchestrator), the discovery loop that keeps the pool equal to the
service's running tasks, and a control loop with its policy state, under its own scaling settings
(the balancer's, overridden by the service's labels). The single-service mode (LB_SERVICE or
LB_BACKENDS) is one route whose rule matches everything.

A route knows nothing of the balancer: the balancer registers its loops and reads its status.
"""

from __future__ import annotations

from typing import Any

from lb.clock import Clock
from lb.collect.pool import Pool
from lb.config import Config
from lb.control import ControlLoop
from lb.discovery import Discovery
from lb.orchestrators.base import Orchestrator
from lb.routing.hold import HoldQueue
from lb.routing.rules import MATCH_ALL, Rule


def new_pool(config: Config, clock: Clock) -> Pool:
    return Pool(clock, eject_after=config.eject_after, eject_base_s=config.eject_base,
                retry_budget=config.retry_budget)


class Route:
    def __init__(self, name: str, config: Config, clock: Clock, *, rule: Rule = MATCH_ALL,
                 priority: int | None = None, pool: Pool | None = None) -> None:
        self.name = name
        self.rule = rule
        self.priority = rule.default_priority if priority is None else priority
        self.config = config          # this route's settings: the balancer's, overridden by labels
        self.clock = clock
        self.pool = pool or new_pool(config, clock)
        # The hold queue stays with the pool: a route re-made over the same pool keeps its held requests.
        self.hold = self.pool.hold or HoldQueue(name, self.pool, clock, max_held=config.hold_max,
                                                timeout=config.hold_timeout, probe_timeout=config.connect_timeout)
        self.orchestrator: Orchestrator | None = None
        self.discovery: Discovery | None = None
        self.control: ControlLoop | None = None
        self.error: str | None = None
        self.not_found = False        # the table's stand-in for "no route": answers 404

    def attach(self, orchestrator: Orchestrator, *, discover: bool, scale: bool) -> None:
        """Give the route its service: a discovery loop (Swarm) and a control loop (when it scales)."""
        self.orchestrator = orchestrator
        self.discovery = Discovery(self.config, self.pool, orchestrator, self.clock, name=self.name) \
            if discover else None
        self.control = ControlLoop(self.config, self.pool, orchestrator, self.clock, name=self.name) \
            if scale else None
        # Hold requests at no serving backend when one can come: discovered tasks, or static backends.
        hold = self.hold
        self.pool.hold = hold if discover or self.pool.backends else None
        hold.on_first = []
        hold.start_error = orchestrator.start_error if discover else None
        hold.on_serving = None
        if self.control is not None:
            self.control.hold = hold
            hold.on_first.append(self.control.wake)
            hold.on_serving = self.control.served
        discovery = self.discovery
        hold.known = None if discovery is None else (lambda: discovery.backends is not None)
        if discovery is not None:
            discovery.urgent = lambda: hold.held > 0
            hold.on_first.append(discovery.wake)

    def loops(self) -> dict[str, Any]:
        """Background loops to run for this route, by task name."""
        out: dict[str, Any] = {}
        if self.discovery is not None:
            out[f"discovery:{self.name}"] = self.discovery.run
        if self.control is not None:
            out[f"control:{self.name}"] = self.control.run
        if self.pool.hold is not None:
            out[f"hold:{self.name}"] = self.pool.hold.run
        return out

    def replicas_status(self) -> dict[str, Any]:
        """/status `replicas`: the control loop's figures and the hold queue's (held, cold starts)."""
        if self.control is not None:
            return self.control.status_json()
        return self.hold.status() if self.pool.hold is not None else {}

    def status(self) -> dict[str, Any]:
        """One entry of /status `services`."""
        return {"name": self.name, "rule": self.rule.text, "priority": self.priority,
                "replicas": self.replicas_status(),
                "backends": self.pool.status(), "error": self.error}
