"""The Kubernetes Horizontal Pod Autoscaler's algorithm, kept as a baseline.

From the HPA docs and its replica calculator: every 15 s (the sync period),
desired = ceil(current * metric / target), skipped while the ratio is within the 0.1 tolerance;
scale-up is limited to the larger of +4 pods and +100% per period, and scale-down takes the
highest recommendation of the last 300 s (the stabilisation window). The metric is the average
in-flight requests per ready replica over the panic window: the freshest average the balancer
has, as close as it gets to the HPA's 15 s metrics resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot
from policies.settings import value


@dataclass(frozen=True)
class HpaState:
    last_sync: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas) within the stabilisation window


class HpaPolicy:
    name = "hpa"

    def __init__(self, settings: Settings) -> None:
        self.target = value(settings, "target_inflight")
        self.tolerance = value(settings, "hpa_tolerance")
        self.period = value(settings, "hpa_period_s")
        self.stabilization = value(settings, "hpa_downscale_stabilization_s")

    def initial_state(self) -> HpaState:
        return HpaState()

    def decide(self, snapshot: Snapshot, state: HpaState) -> tuple[Decision, HpaState]:
        now, current = snapshot.now, snapshot.replicas
        if state.last_sync is not None and now - state.last_sync < self.period:
            return Decision(current, f"holding at {current}: next HPA sync in "
                                     f"{self.period - (now - state.last_sync):.0f} s"), state
        total = snapshot.panic_inflight if snapshot.panic_inflight is not None else snapshot.stable_inflight
        if total is None:
            return Decision(current, f"holding at {current}: no in-flight data yet"), state
        ready = max(1, snapshot.ready_replicas)
        per_replica = total / ready
        ratio = per_replica / self.target
        about = (f"{per_replica:.1f} in flight per ready replica is {ratio:.2f} of the target "
                 f"{self.target:g}")
        if current == 0:
            recommended = math.ceil(total / self.target)
        elif abs(ratio - 1.0) <= self.tolerance:
            recommended = current
            about += f" (within the {self.tolerance:g} tolerance)"
        else:
            recommended = math.ceil(ready * ratio)
        # Scale-down stabilisation: act on the highest recommendation of the window.
        kept = tuple((t, n) for t, n in state.recommendations if now - t < self.stabilization)
        kept += ((now, recommended),)
        desired = recommended
        if recommended < current:
            desired = min(current, max(n for _, n in kept))
            if desired > recommended:
                about += f"; the highest recommendation of the last {self.stabilization:g} s is {desired}"
        most = max(current + 4, current * 2)
        if desired > most:
            desired = most
            about += f"; limited to {most} this period (+4 or +100%)"
        new_state = HpaState(now, kept)
        if desired == current:
            return Decision(current, f"holding at {current}: {about}"), new_state
        return Decision(desired, f"{desired} replicas: {about}"), new_state
