"""Requests per second per replica (LB_TARGET_RPS), with the same stable/panic decider as concurrency.

Completed requests are what the balancer counts, so under overload the rate seen is capped by
what the replicas manage: the panic window (2x the ready capacity) is what gets it out of that.
"""

from __future__ import annotations

from policies.base import Snapshot
from policies.concurrency import WindowedTargetPolicy


class RpsPolicy(WindowedTargetPolicy):
    name = "rps"
    metric = "requests/s"
    target_key = "target_rps"

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None, str]:
        return snapshot.stable_rps, snapshot.panic_rps, ""
