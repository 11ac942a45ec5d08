"""Keep the p95 latency under LB_TARGET_P95_MS: up in proportion when above, down cautiously when well below.

Latency only says "too few" once requests queue, and says nothing about how many are too many, so
scale-down is one replica at a time, only when the p95 is under `latency_down_at` of the target,
after a full stable window of data and a quiet spell. Scale-up waits for the replicas it already
asked for to be ready (a lagging p95 would otherwise keep multiplying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot
from policies.settings import value


@dataclass(frozen=True)
class LatencyState:
    last_up: float | None = None
    last_down: float | None = None


class LatencyPolicy:
    name = "latency"

    def __init__(self, settings: Settings) -> None:
        self.target = value(settings, "target_p95_ms")
        self.stable_window = value(settings, "stable_window")
        self.max_up = value(settings, "max_scale_up_rate")
        self.down_at = value(settings, "latency_down_at")
        self.up_cooldown = value(settings, "latency_up_cooldown_s")
        self.down_cooldown = value(settings, "latency_down_cooldown_s", self.stable_window)

    def initial_state(self) -> LatencyState:
        return LatencyState()

    def decide(self, snapshot: Snapshot, state: LatencyState) -> tuple[Decision, LatencyState]:
        now, current, p95 = snapshot.now, snapshot.replicas, snapshot.p95_ms
        if p95 is None:
            return Decision(current, f"holding at {current}: no latency data yet"), state
        ready = max(1, snapshot.ready_replicas)
        about = f"p95 {p95:.0f} ms vs target {self.target:g} ms"
        if p95 > self.target:
            if ready < current:
                return Decision(current, f"holding at {current}: {about}; waiting for "
                                         f"{current - ready} starting replicas"), state
            if state.last_up is not None and now - state.last_up < self.up_cooldown:
                return Decision(current, f"holding at {current}: {about}; just scaled up"), state
            desired = max(current + 1, min(math.ceil(ready * p95 / self.target), math.ceil(ready * self.max_up)))
            return (Decision(desired, f"{desired} replicas: {about}, scaling by {p95 / self.target:.2f}"),
                    LatencyState(now, state.last_down))
        if p95 < self.down_at * self.target and current > 1:
            if snapshot.stable_coverage_s < self.stable_window:
                return Decision(current, f"holding at {current}: {about}; not scaling down on "
                                         f"{snapshot.stable_coverage_s:.0f} s of data"), state
            quiet_since = max(t for t in (state.last_up, state.last_down, -math.inf) if t is not None)
            if now - quiet_since < self.down_cooldown:
                return Decision(current, f"holding at {current}: {about}; waiting "
                                         f"{self.down_cooldown - (now - quiet_since):.0f} s before scaling down"), state
            return (Decision(current - 1, f"{current - 1} replicas: {about}, well below: removing one"),
                    LatencyState(state.last_up, now))
        return Decision(current, f"holding at {current}: {about}"), state
