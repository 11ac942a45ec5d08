"""The typical Swarm autoscaler, kept as a baseline: fixed steps at thresholds, then a cooldown.

Tools in use on Swarm today poll an average (usually CPU over a minute), add `step_size` replicas
above a high threshold, remove `step_size` below a low one, and then wait out a cooldown. Here the
average is in-flight requests per ready replica over the stable window, as a share of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot
from policies.settings import value


@dataclass(frozen=True)
class StepState:
    last_change: float | None = None  # when this policy last asked for a different count


class StepPolicy:
    name = "step"

    def __init__(self, settings: Settings) -> None:
        self.target = value(settings, "target_inflight")
        self.stable_window = value(settings, "stable_window")
        self.step = int(value(settings, "step_size"))
        self.up_at = value(settings, "step_up_at")      # share of target
        self.down_at = value(settings, "step_down_at")
        self.cooldown = value(settings, "step_cooldown_s")

    def initial_state(self) -> StepState:
        return StepState()

    def decide(self, snapshot: Snapshot, state: StepState) -> tuple[Decision, StepState]:
        now, current = snapshot.now, snapshot.replicas
        if snapshot.stable_inflight is None:
            return Decision(current, f"holding at {current}: no in-flight data yet"), state
        ready = max(1, snapshot.ready_replicas)
        usage = snapshot.stable_inflight / (ready * self.target)
        about = (f"{snapshot.stable_inflight:.1f} in flight over {self.stable_window:g} s is "
                 f"{usage:.0%} of the target {self.target:g} on {ready} ready")
        if state.last_change is not None and now - state.last_change < self.cooldown:
            wait = self.cooldown - (now - state.last_change)
            return Decision(current, f"holding at {current}: {about}; cooling down {wait:.0f} s more"), state
        if usage > self.up_at:
            desired = current + self.step
            return (Decision(desired, f"{desired} replicas: {about}, above {self.up_at:.0%}: adding {self.step}"),
                    StepState(now))
        if usage < self.down_at and current > 1 and snapshot.stable_coverage_s >= self.stable_window:
            desired = max(current - self.step, 1)
            return (Decision(desired, f"{desired} replicas: {about}, below {self.down_at:.0%}: removing "
                                      f"{current - desired}"), StepState(now))
        return Decision(current, f"holding at {current}: {about}, within {self.down_at:.0%}..{self.up_at:.0%}"), state
