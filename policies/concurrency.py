"""The default policy: a target of in-flight requests per replica, Knative's stable/panic way.

Modelled on Knative Serving's pkg/autoscaler/scaling/autoscaler.go:
- desired = ceil(average in-flight / target) over the stable window and over the panic window,
  each bounded by the step rates: at most ready * max_scale_up_rate, at least
  ready / max_scale_down_rate;
- panic starts when the panic window wants `panic_threshold` (2x) the ready replicas or more, and
  is extended each time that is still so; in panic the count never goes down: it holds the most
  wanted since the panic began;
- after a (re)start, no scale-down until the stable window holds a full window of data.

Four changes, each for a failure the simulator showed (BENCHMARKS.md has the figures):
1. Scale up on the panic window whenever it wants more than the stable one, not only past 2x, and
   for the load expected when new replicas would serve: the panic average plus its rise per second
   since a panic window ago, times `lead_s` (cold start + interval + half the panic window). A 60 s
   average lags a ramp by 30 s; at a target that is a replica's whole capacity, lag builds a queue.
2. The stable window's in-flight is capped by Little's law with the median latency (rate x p50)
   when latencies are known. A queue that built up while replicas were starting is drained within
   seconds, but its in-flight time sits in a 60 s average for a minute and would hold the burst's
   count that long. Where latencies are skewed the cap is low, which only weakens the smoothing:
   the panic window, uncapped, still sets the floor.
3. Panic ends `panic_hold_s` (default: one panic window) after its last trigger rather than a whole
   stable window: the scale-down after it is still gradual, through the stable window.
4. No scale-down within a cold start (`cold_start_s`) of scaling up while replicas are still
   starting: with random arrivals the trend would otherwise ask for a replica and cancel it at
   the next decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot
from policies.settings import value

EPS = 1e-9  # 100.0 / 10.0 must want 10 replicas, not 11


@dataclass(frozen=True)
class PanicState:
    panic_since: float | None = None  # last time the panic trigger fired (Knative's panicTime)
    max_panic: int = 0                # the most replicas wanted during this panic
    history: tuple[tuple[float, float], ...] = ()  # (time, panic average) over a panic window, for the trend
    last_up: float | None = None      # when this policy last asked for more replicas


class WindowedTargetPolicy:
    """The stable/panic decider over any metric with a per-replica target."""

    name = "windowed"
    metric = "value"            # words for reasons: "12.0 in flight", "80.0 requests/s"
    target_key = "target_inflight"  # the setting (in policies/settings.py) holding the per-replica target

    def __init__(self, settings: Settings) -> None:
        self.target = value(settings, self.target_key)
        self.stable_window = value(settings, "stable_window")
        self.panic_window = value(settings, "panic_window")
        interval = value(settings, "scale_interval")
        self.max_up = value(settings, "max_scale_up_rate")
        self.max_down = value(settings, "max_scale_down_rate")
        self.panic_threshold = value(settings, "panic_threshold")
        self.panic_hold = value(settings, "panic_hold_s", self.panic_window)
        cold_start = self.cold_start = value(settings, "cold_start_s")
        self.lead = value(settings, "lead_s", cold_start + interval + self.panic_window / 2)

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None, str]:
        """(stable, panic) averages of the metric, totals across replicas, and a note on them."""
        raise NotImplementedError

    def initial_state(self) -> PanicState:
        return PanicState()

    def decide(self, snapshot: Snapshot, state: PanicState) -> tuple[Decision, PanicState]:
        now, current = snapshot.now, snapshot.replicas
        stable, panic, note = self.values(snapshot)
        if stable is None:
            return Decision(current, f"holding at {current}: no {self.metric} data yet"), state
        if panic is None:  # a panic window with no data of its own: the stable one is the best guess
            panic = stable
        # The trend: the slowest rise from each panic average of the last panic window to this
        # one. A steady ramp gives the same slope from each; a flapping or noisy input has some
        # earlier value as high as now, so it gives none. Less than half a window of history is
        # too short to tell a trend from a wobble.
        history = tuple((t, v) for t, v in state.history if now - t <= self.panic_window + EPS and t < now)
        rise = 0.0
        if history and now - history[0][0] >= self.panic_window / 2 - EPS:
            rise = max(0.0, min((panic - v) / (now - t) for t, v in history))
        history += ((now, panic),)
        expected = panic + rise * self.lead

        ready = max(1, snapshot.ready_replicas)
        most = math.ceil(self.max_up * ready)
        least = math.floor(ready / self.max_down)
        want_stable = math.ceil(stable / self.target - EPS)
        want_panic = math.ceil(expected / self.target - EPS)
        desired_stable = min(max(want_stable, least), most)
        desired_panic = min(max(want_panic, least), most)

        over = math.ceil(panic / self.target - EPS) / ready >= self.panic_threshold
        panic_since, max_panic = state.panic_since, state.max_panic
        if over:
            if panic_since is None:
                # Knative starts the hold at the capacity it panicked with; replicas already
                # asked for and still starting count too, or a panic could cancel their cold start.
                max_panic = max(ready, current)
            panic_since = now
        elif panic_since is not None and now - panic_since >= self.panic_hold:
            panic_since, max_panic = None, 0

        reason = f"{stable:.1f} {self.metric}{note} over {self.stable_window:g} s wants {want_stable}, {panic:.1f}"
        if rise > 0:
            reason += f" rising {rise:.1f}/s (so {expected:.1f} in {self.lead:g} s)"
        reason += (f" over {self.panic_window:g} s wants {want_panic} (target {self.target:g} per replica, "
                   f"{ready} ready)")
        if panic_since is not None:
            max_panic = max(max_panic, desired_panic, desired_stable, current)
            desired = max_panic
            reason += f"; in panic (last burst at {panic_since:.0f} s): holding the most wanted, {max_panic}"
        else:
            desired = max(desired_stable, desired_panic)
        if max(want_stable, want_panic) > most:
            reason += f"; limited to {most} by the scale-up rate {self.max_up:g}"
        elif desired == least > max(want_stable, want_panic):
            reason += f"; limited to {least} by the scale-down rate {self.max_down:g}"
        starting = state.last_up is not None and now - state.last_up < self.cold_start
        if desired < current and snapshot.ready_replicas < current and starting:
            # Cancelling a start a decision after asking for it is churn, and the load that asked
            # is often back by the time it would have served. Only for a cold start's length: a
            # replica that never gets ready must not block scale-down for ever.
            reason += f"; not scaling down while {current - snapshot.ready_replicas} replicas are starting"
            desired = current
        elif desired < current and snapshot.stable_coverage_s < self.stable_window:
            reason += (f"; not scaling down from {current}: only {snapshot.stable_coverage_s:.0f} s "
                       f"of the {self.stable_window:g} s stable window measured")
            desired = current
        return (Decision(desired, f"{desired} replicas: {reason}"),
                PanicState(panic_since, max_panic, history, now if desired > current else state.last_up))


class ConcurrencyPolicy(WindowedTargetPolicy):
    """In-flight requests per replica (LB_TARGET_INFLIGHT)."""

    name = "concurrency"
    metric = "in flight"

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None, str]:
        stable, note = snapshot.stable_inflight, ""
        if stable is not None and snapshot.stable_rps is not None and snapshot.p50_ms is not None:
            # Little's law with the median latency: the in-flight a drained queue leaves behind in
            # the stable average does not count (change 2 in the module docstring).
            typical = snapshot.stable_rps * snapshot.p50_ms / 1000.0
            if typical < stable - EPS:
                stable, note = typical, f" (rate x p50; {snapshot.stable_inflight:.1f} measured)"
        return stable, snapshot.panic_inflight, note
