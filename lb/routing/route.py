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

    def loops(self) -> dict[str, Any]:
        """Background loops to run for this route, by task name."""
        out: dict[str, Any] = {}
        if self.discovery is not None:
            out[f"discovery:{self.name}"] = self.discovery.run
        if self.control is not None:
            out[f"control:{self.name}"] = self.control.run
        return out

    def status(self) -> dict[str, Any]:
        """One entry of /status `services`."""
        return {"name": self.name, "rule": self.rule.text, "priority": self.priority,
                "replicas": self.control.status_json() if self.control is not None else {},
                "backends": self.pool.status(), "error": self.error}
