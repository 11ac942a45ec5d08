"""The default policy: a target of in-flight requests per replica, Knative's stable/panic way.

Modelled on Knative Serving's pkg/autoscaler/scaling/autoscaler.go:
- desired = ceil(average in-flight / target), over the stable window and over the panic window;
- each is bounded by the step rates: at most ready * max_scale_up_rate, at least
  ready / max_scale_down_rate;
- panic starts when the panic window's desired count reaches `panic_threshold` (2x) the ready
  replicas, and is extended each time that is still so; it ends once a whole stable window has
  passed without it. In panic the count never goes down: it holds the largest seen;
- after a (re)start, no scale-down until the stable window holds a full window of data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot, setting


@dataclass(frozen=True)
class PanicState:
    panic_since: float | None = None  # last time the panic trigger fired (Knative's panicTime)
    max_panic: int = 0                # the most replicas wanted during this panic


class WindowedTargetPolicy:
    """Knative's decider over any per-replica metric with a stable and a panic average."""

    name = "windowed"
    metric = "value"            # words for reasons: "12.0 in flight", "80.0 requests/s"
    target_key = "target"
    target_default = 1.0

    def __init__(self, settings: Settings) -> None:
        self.target = setting(settings, self.target_key, self.target_default)
        self.stable_window = setting(settings, "stable_window", 60.0)
        self.panic_window = setting(settings, "panic_window", 6.0)
        self.max_up = setting(settings, "max_scale_up_rate", 1000.0, low=1.0 - 1e-9)
        self.max_down = setting(settings, "max_scale_down_rate", 2.0, low=1.0 - 1e-9)
        self.panic_threshold = setting(settings, "panic_threshold", 2.0)

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        raise NotImplementedError

    def initial_state(self) -> PanicState:
        return PanicState()

    def decide(self, snapshot: Snapshot, state: PanicState) -> tuple[Decision, PanicState]:
        now, current = snapshot.now, snapshot.replicas
        stable, panic = self.values(snapshot)
        if stable is None:
            return Decision(current, f"holding at {current}: no {self.metric} data yet"), state
        if panic is None:  # a panic window with no data of its own: the stable one is the best guess
            panic = stable
        ready = max(1, snapshot.ready_replicas)
        most = math.ceil(self.max_up * ready)
        least = math.floor(ready / self.max_down)
        want_stable = math.ceil(stable / self.target)
        want_panic = math.ceil(panic / self.target)
        desired_stable = min(max(want_stable, least), most)
        desired_panic = min(max(want_panic, least), most)

        over = want_panic / ready >= self.panic_threshold
        panic_since, max_panic = state.panic_since, state.max_panic
        if over:
            if panic_since is None:
                # Knative starts the hold at the capacity it panicked with; replicas already
                # asked for and still starting count too, or a panic could cancel their cold start.
                max_panic = max(ready, current)
            panic_since = now
        elif panic_since is not None and now - panic_since >= self.stable_window:
            panic_since, max_panic = None, 0

        reason = (f"{stable:.1f} {self.metric} over {self.stable_window:g} s wants {want_stable}, "
                  f"{panic:.1f} over {self.panic_window:g} s wants {want_panic} "
                  f"(target {self.target:g} per replica, {ready} ready)")
        if panic_since is not None:
            max_panic = max(max_panic, desired_panic, desired_stable, current)
            desired = max_panic
            reason += (f"; panic since the burst at {panic_since:.0f} s: holding the most seen, "
                       f"{max_panic}")
        else:
            desired = desired_stable
        if max(want_stable, want_panic) > most:
            reason += f"; limited to {most} by the scale-up rate {self.max_up:g}"
        elif desired_stable > want_stable and panic_since is None:
            reason += f"; limited to {least} by the scale-down rate {self.max_down:g}"
        if desired < current and snapshot.stable_coverage_s < self.stable_window:
            reason += (f"; not scaling down from {current}: only {snapshot.stable_coverage_s:.0f} s "
                       f"of the {self.stable_window:g} s stable window measured")
            desired = current
        return Decision(desired, f"{desired} replicas: {reason}"), PanicState(panic_since, max_panic)


class ConcurrencyPolicy(WindowedTargetPolicy):
    """In-flight requests per replica (LB_TARGET_INFLIGHT)."""

    name = "concurrency"
    metric = "in flight"
    target_key = "target_inflight"
    target_default = 10.0

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        return snapshot.stable_inflight, snapshot.panic_inflight
