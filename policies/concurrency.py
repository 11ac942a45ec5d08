"""The default policy: a target of in-flight requests per replica, after Knative's stable/panic way.

Modelled on Knative Serving's pkg/autoscaler/scaling/autoscaler.go: desired = ceil(in-flight /
target), bounded by the step rates (at most ready * max_scale_up_rate, at least ready /
max_scale_down_rate); panic when the panic window wants `panic_threshold` (2x) the ready replicas,
and no scale-down in panic; after a (re)start, no scale-down until the stable window is full.

Issue 5 changed four things for the smooth traces (scale up on the panic window and its trend, for
the load expected `lead_s` ahead; cap the stable window by rate x p50; end panic `panic_hold_s`
after its last trigger; cancel no replica still starting). Under random arrivals that design
flapped: on `python -m policies.simulate --noise --target-inflight 7` (Poisson arrivals,
log-normal service times, seeds 2-4) it made 35 scale events on `step` where the oracle makes 1,
67 on `ramp` (oracle 14), 13 on `spike` (2) and 6 on `steady` (0), with 58, 69, 39 and 6 replicas
started or stopped. The changes of issue 11, each for what the noisy runs showed:

1. A tolerance of chance (`noise_sigmas`, 2). A window's average over N requests wobbles by about
   1/sqrt(N) of itself (sqrt(2/N) for in-flight, whose service times spread too); measured from
   the panic averages of the last stable window (the median absolute change between successive
   ones, which ignores a trend and a burst's few large changes), Poisson until there are eight.
   Later (issue 11 follow-up): from the differences of successive changes instead, which cancel a
   sine's curvature too: the changes themselves read the smooth sine's trough as 1-2 in flight of
   chance, which hid its rise until panic (smooth sine 1.98% late, 1.45x the oracle -> 0.81%,
   1.23x; the noisy runs of seeds 2-7 unchanged within 0.001 points and 0.01x).
   Replicas are added when even the lower bound (load - 2 sigma) wants more, and removed only when
   the upper bound (load + 2 sigma) wanted fewer (point 3). The measured noise of a smooth load is
   nil, so the smooth traces keep their exact counts (a Poisson guess added a replica at exact
   multiples of the target: 1.92x the oracle on the smooth spike).
2. Persistence (`scale_up_persist_s`, one interval): a count the best guess wants two decisions
   running, while the upper bound already did, is added without waiting for the lower bound. A
   slow rise from a trough (sine at 100/s, 2 replicas) otherwise waited 4 s more and queued.
3. A scale-down delay (`scale_down_delay_s`, 14 s): the count goes down only to the most the
   upper bound wanted over the delay (HPA's stabilisation, shorter). With the point estimate
   instead, 15 s of chance below a boundary took a replica and the next decision added it back
   (steady, seed 2, at 470 s). 10 s made sawtooth 28% late (smooth); 20 s cost 1.54x on smooth
   sawtooth and 1.53x on smooth spike; 15 s: 1.48x and 1.45x; 14 s: 1.45x and 1.40x, every smooth
   SLO figure unchanged, and noisy sawtooth (seed 19) 1.272x where 15 s cost 1.3005x. The stable
   window no longer sets the count (it lagged a spike by a minute: 1.45x the oracle with noise);
   it still guards start-up.
4. Trend confidence: the rise per second is the slowest from each panic average of the last
   `trend_window_s` (two panic windows) at least half a panic window old, less what chance
   explains, and only full panic windows count. A step seen through a 6 s window looks like a 6 s
   ramp: with three points over 3 s (before) the first 4 users at one replica read as a rise and
   asked for a second; over 12 s the flat points before the step cap it. After a restart the
   first windows fill while clients reconnect: they are not full panic windows, so no trend.
5. The lead uses the cold start the balancer measured (`Snapshot.cold_start_s`), the setting only
   until there is one; so does the rule that cancels no replica still starting.
6. Scale to zero (issue 8): with `min_replicas` 0 the policy answers 0 once nothing has been in
   flight or arrived for `scale_to_zero_after` seconds; zero is never the answer otherwise. At
   zero, held requests are the load (the windows lag): ceil(held / target) in the first decision.
   Requests held through a cold start are a backlog, not a concurrency: while replicas start, and
   for two panic windows after, the load is the held arrival rate times the last median latency
   measured without held requests (Little's law); with nothing measured yet, the held count.
   With nothing at all arriving for a panic window, the scale-down delay does not apply.

7. At 4 replicas or fewer (3 at first) the trend takes no discount for chance. There one replica is
   a quarter or more of the capacity and 2 sigma of chance is about a replica's target, so the discount hid a
   real rise: on noisy `sine` (seeds 2-7) the rise out of the trough read 0/s from 2 replicas at 13-14
   in flight, the third replica was asked 6 s late and the default was up to 0.003 points more late
   than hpa (seed 4: 0.325% vs 0.323%). Without the discount: 0.314/0.313/0.323/0.312/0.319/0.297%
   vs hpa's 0.316/0.313/0.323/0.313/0.319/0.298%, every other noisy and smooth figure unchanged
   (0.5 sigma still lost seed 3; without the discount at every count, sawtooth cost 1.31-1.33x and
   step 7-9 events). A wrong rise at so few replicas costs at most a replica for the scale-down delay.
   Later, over seeds 1-20 (not just 2-7): from 4 replicas or fewer, and there a measured rise adds the
   replica the best guess wants at once (not after persistence). Noisy sine was late out of a trough
   at 4 replicas (seed 10: 0.3043% vs hpa's 0.3038%) and waited 6 s for persistence at 2 (seed 9: the
   best guess wanted 3 at 244 s, added at 246 s, ready at 251 s; 0.2911% vs 0.2901%); now both are
   within hpa's. No margin of any other noisy bar shrank by more than 14 replica-seconds (ramp);
   smooth figures unchanged. Left: seed 20's sine (0.3145% vs 0.3144%, under half a request) and
   steady on seeds 10 and 13, where holding the oracle's 8 replicas is 0.03-0.2 requests later than
   `step`'s 10: a tie no policy at the oracle's count can break.

Figures with noise at a 70% target (seeds 2-4, mean; before -> after): scale events 35 -> 3 on
step, 13 -> 7 on spike, 67 -> 14 on ramp, 71 -> 51 on sine (oracle 52), 6 -> 0 on steady; replicas
started or stopped 58 -> 24, 39 -> 36, 69 -> 14, 73 -> 52, 6 -> 0; replica-seconds 1.01x, 1.18x, 0.98x,
1.07x, 1.00x the oracle; SLO violations unchanged (2.73%, 14.03%, 0.32%, 0.32%, 0.32%). Sawtooth
(every minute a ramp and a drop) pays for the delay: 1.22x -> 1.29x, 0.49% -> 0.77% late (hpa 4.96%).
BENCHMARKS.md has the tables and the commands.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from policies.base import Decision, Settings, Snapshot
from policies.settings import value

EPS = 1e-9  # 100.0 / 10.0 must want 10 replicas, not 11
LOW_REPLICAS = 4  # at so few replicas the trend is taken without a discount for chance (change 7)
MIN_NOISE_SAMPLES = 8  # panic averages needed before the noise is measured rather than assumed


@dataclass(frozen=True)
class PanicState:
    panic_since: float | None = None  # last time the panic trigger fired (Knative's panicTime)
    history: tuple[tuple[float, float], ...] = ()  # (time, panic average) of full panic windows, for the trend
    last_up: float | None = None      # when this policy last asked for more replicas
    recent: tuple[tuple[float, int], ...] = ()  # (time, replicas wanted) over the scale-down delay
    more_since: float | None = None   # since when every decision wanted more than the current count
    backlog_until: float | None = None  # the panic window holds requests that were held until then
    held_since: float | None = None   # when requests started to be held (nothing ready)
    held_rate: float = 0.0            # requests held per second during the last cold start
    p50_ms: float | None = None       # the last median latency measured


class WindowedTargetPolicy:
    """The stable/panic decider over any metric with a per-replica target."""

    name = "windowed"
    metric = "value"            # words for reasons: "12.0 in flight", "80.0 requests/s"
    target_key = "target_inflight"  # the setting (in policies/settings.py) holding the per-replica target
    # Relative noise of a window's average over N requests is sqrt(NOISE / N): 1 for a count of
    # Poisson arrivals (rps), 2 for in-flight, whose service times spread too (exponential ones).
    noise = 1.0

    def __init__(self, settings: Settings) -> None:
        self.target = value(settings, self.target_key)
        self.stable_window = value(settings, "stable_window")
        self.panic_window = value(settings, "panic_window")
        self.interval = value(settings, "scale_interval")
        self.max_up = value(settings, "max_scale_up_rate")
        self.max_down = value(settings, "max_scale_down_rate")
        self.panic_threshold = value(settings, "panic_threshold")
        self.panic_hold = value(settings, "panic_hold_s", self.panic_window)
        self.cold_start = value(settings, "cold_start_s")
        self.lead_setting = settings.get("lead_s") if settings is not None else None
        self.lead = value(settings, "lead_s", self.cold_start + self.interval + self.panic_window / 2)
        self.trend_window = value(settings, "trend_window_s", 2 * self.panic_window)
        self.noise_window = max(self.trend_window, self.stable_window)
        self.sigmas = value(settings, "noise_sigmas")
        self.down_delay = value(settings, "scale_down_delay_s")
        self.persist = value(settings, "scale_up_persist_s", self.interval)
        self.min_replicas = int(value(settings, "min_replicas"))
        self.to_zero_after = value(settings, "scale_to_zero_after")

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None, str]:
        """(stable, panic) averages of the metric, totals across replicas, and a note on them."""
        raise NotImplementedError

    def rates(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        """Requests per second behind the (stable, panic) averages: how many samples they are of."""
        return snapshot.stable_rps, snapshot.panic_rps

    def initial_state(self) -> PanicState:
        return PanicState()

    def _sigma(self, level: float, rate: float | None, seconds: float) -> float:
        """The standard deviation of chance in a window's average of `level` over `seconds`."""
        n = (rate or 0.0) * seconds
        return level * math.sqrt(self.noise / n) if n >= 1.0 else 0.0

    def _measured_sigma(self, history: tuple[tuple[float, float], ...]) -> float | None:
        """Chance in one panic average, from the changes between successive ones (None: too few).

        Two averages `d` seconds apart differ by chance with a variance of 2 sigma^2 d / window
        (they share the rest); the median absolute deviation of the changes ignores a trend (every
        change alike) and the few large ones of a real burst.
        """
        if len(history) < MIN_NOISE_SAMPLES:
            return None
        changes = [(v1 - v0) / math.sqrt(min(t1 - t0, self.panic_window))
                   for (t0, v0), (t1, v1) in zip(history, history[1:]) if t1 > t0]
        if len(changes) < MIN_NOISE_SAMPLES - 1:
            return None
        # Successive changes are independent under chance; their differences cancel a trend's slope
        # and most of its curvature (a sine near its trough), and have twice their variance.
        bends = [c1 - c0 for c0, c1 in zip(changes, changes[1:])]
        middle = statistics.median(bends)
        mad = statistics.median(abs(c - middle) for c in bends)
        return 1.4826 * mad * math.sqrt(self.panic_window / 2) / math.sqrt(2)

    def decide(self, snapshot: Snapshot, state: PanicState) -> tuple[Decision, PanicState]:
        now, current = snapshot.now, snapshot.replicas
        stable, panic, note = self.values(snapshot)
        held = snapshot.held
        if (self.min_replicas == 0 and current > 0 and held == 0 and not (panic or 0.0) > EPS
                and snapshot.idle_s >= self.to_zero_after - EPS):
            return (Decision(0, f"0 replicas: nothing in flight or arriving for {snapshot.idle_s:.0f} s "
                                f"(scale to zero after {self.to_zero_after:g} s)"), PanicState(p50_ms=state.p50_ms))
        if stable is None and not held:
            return Decision(current, f"holding at {current}: no {self.metric} data yet"), state
        if panic is None:  # a panic window with no data of its own: the stable one is the best guess
            panic = stable
        if stable is None:
            stable = panic
        if stable is None or panic is None:  # held requests and no window yet (a start at zero)
            stable = panic = 0.0
        cold_start = self.cold_start if snapshot.cold_start_s is None else snapshot.cold_start_s
        lead = self.lead if self.lead_setting is not None else cold_start + self.interval + self.panic_window / 2
        stable_rate, panic_rate = self.rates(snapshot)
        # Chance: measured from how the panic averages of the last stable window wobble, once there
        # are enough of them; until then what Poisson arrivals alone would give.
        kept = tuple((t, v) for t, v in state.history if now - t <= self.noise_window + EPS and t < now)
        measured = self._measured_sigma(kept)
        sigma = self.sigmas * (self._sigma(panic, panic_rate, self.panic_window) if measured is None else measured)
        # The trend: the slowest rise from each panic average of the last trend window to this one,
        # less what chance explains. A steady ramp gives the same slope from each; a flapping or
        # noisy input, or a step seen through the window, has some earlier value as high as now.
        # Less than half a trend window of history is too short, and only full panic windows count:
        # after a (re)start, clients reconnecting fill the first window and would read as a rise.
        history = tuple((t, v) for t, v in kept if now - t <= self.trend_window + EPS)
        rise = 0.0
        if history and now - history[0][0] >= self.trend_window / 2 - EPS:
            # Two averages d seconds apart differ by chance with sigma * sqrt(2 d / window) at most.
            # At LOW_REPLICAS or fewer, no discount for chance (change 7).
            doubt = 0.0 if current <= LOW_REPLICAS else sigma
            rise = max(0.0, min((panic - v - doubt * math.sqrt(2 * min(now - t, self.panic_window) / self.panic_window))
                                / (now - t) for t, v in history if now - t >= self.panic_window / 2 - EPS))
        if snapshot.stable_coverage_s >= self.panic_window - EPS:
            kept += ((now, panic),)
        expected = panic + rise * lead

        ready = max(1, snapshot.ready_replicas)
        most = math.ceil(self.max_up * ready)
        least = math.floor(ready / self.max_down)
        want = math.ceil(expected / self.target - EPS)           # the best guess
        surely = math.ceil((expected - sigma) / self.target - EPS)  # what the load surely wants
        maybe = math.ceil((expected + sigma) / self.target - EPS)  # what it may want
        held_since = (state.held_since if state.held_since is not None else now) if held else None
        backlog = state.backlog_until is not None and now < state.backlog_until - EPS
        # The median latency as served, not as waited for: only from windows free of held requests.
        p50 = state.p50_ms if held or backlog or snapshot.p50_ms is None else snapshot.p50_ms
        if p50 is None and (held or backlog):
            backlog = False  # nothing to tell a backlog's rate by: as any load
        if held and (current == 0 or p50 is None or held_since is None or now - held_since < EPS):
            # At zero, held requests are the load now (the windows lag): ask for them all at once.
            need = math.ceil(max(float(held), expected) / self.target - EPS)
            want, surely, maybe = max(want, need, 1), max(surely, need, 1), max(maybe, need, 1)
        elif held or (backlog and snapshot.ready_replicas > 0):
            # Requests held through a cold start pile up: a backlog the new replicas drain in
            # seconds, not a concurrency to provision for. Until the panic window is clear of them
            # the load is their arrival rate times the last median latency (Little's law).
            rate = held / (now - held_since) if held and held_since is not None else state.held_rate
            need = math.ceil(rate * (p50 or 0.0) / 1000.0 / self.target - EPS)
            want = surely = maybe = max(need, current if held else need, 1)
        held_rate = state.held_rate
        if held and held_since is not None and now > held_since:
            held_rate = held / (now - held_since)
        backlog_until = now + 2 * self.panic_window if held else state.backlog_until

        over = math.ceil(panic / self.target - EPS) / ready >= self.panic_threshold
        panic_since = state.panic_since
        if over:
            panic_since = now
        elif panic_since is not None and now - panic_since >= self.panic_hold:
            panic_since = None
        recent = tuple((t, n) for t, n in state.recent if now - t < self.down_delay - EPS)
        if backlog_until is None or now >= backlog_until - EPS:
            recent += ((now, maybe),)

        reason = f"{panic:.1f} {self.metric} over {self.panic_window:g} s"
        if rise > 0:
            reason += f" rising {rise:.1f}/s (so {expected:.1f} in {lead:g} s)"
        reason += f" wants {want}"
        if sigma > 0:
            reason += f" ({surely}..{maybe} within {self.sigmas:g} sigma of chance)"
        reason += (f" (target {self.target:g} per replica, {ready} ready; "
                   f"{stable:.1f}{note} over {self.stable_window:g} s)")
        if held:
            reason += f"; {held} held"
        more_since = (state.more_since if state.more_since is not None else now) if maybe > current else None
        # Persistence, or at LOW_REPLICAS or fewer a measured rise (change 7): a replica there is a
        # large share of the capacity, and waiting an interval for it queued noisy sine's troughs.
        persistent = want > current and more_since is not None and (
            now - more_since >= self.persist - EPS or (current <= LOW_REPLICAS and rise > 0))
        if surely > current or persistent or (held and current == 0):
            desired = max(want, surely)
            if desired > most and current > 0:
                desired = most
                reason += f"; limited to {most} by the scale-up rate {self.max_up:g}"
        else:
            # Down only to the most the load wanted over the scale-down delay, unless nothing at
            # all has arrived for a panic window: that is no chance.
            desired = min(current, max((n for _, n in recent), default=current))
            if snapshot.idle_s >= self.panic_window - EPS and not held:
                desired = min(current, want)
            if desired < current:
                if desired < least:
                    desired = least
                    reason += f"; limited to {least} by the scale-down rate {self.max_down:g}"
            elif want < current:
                reason += f"; it may have wanted {desired} within the last {self.down_delay:g} s"
            elif want != current:
                reason += "; within chance: holding"
        starting = state.last_up is not None and now - state.last_up < cold_start
        if desired < current and panic_since is not None:
            reason += f"; in panic (last burst at {panic_since:.0f} s): not scaling down"
            desired = current
        elif desired < current and snapshot.ready_replicas < current and starting:
            # Cancelling a start a decision after asking for it is churn, and the load that asked
            # is often back by the time it would have served. Only for a cold start's length: a
            # replica that never gets ready must not block scale-down for ever.
            reason += f"; not scaling down while {current - snapshot.ready_replicas} replicas are starting"
            desired = current
        elif desired < current and snapshot.stable_coverage_s < self.stable_window:
            reason += (f"; not scaling down from {current}: only {snapshot.stable_coverage_s:.0f} s "
                       f"of the {self.stable_window:g} s stable window measured")
            desired = current
        if desired < 1 <= current or (desired < 1 and self.min_replicas > 0):
            desired = 1  # zero is only the scale-to-zero rule's answer
        return (Decision(desired, f"{desired} replicas: {reason}"),
                PanicState(panic_since, kept, now if desired > current else state.last_up, recent,
                           None if desired > current else more_since, backlog_until, held_since, held_rate, p50))


class ConcurrencyPolicy(WindowedTargetPolicy):
    """In-flight requests per replica (LB_TARGET_INFLIGHT)."""

    name = "concurrency"
    metric = "in flight"

    noise = 2.0

    def values(self, snapshot: Snapshot) -> tuple[float | None, float | None, str]:
        stable, note = snapshot.stable_inflight, ""
        if stable is not None and snapshot.stable_rps is not None and snapshot.p50_ms is not None:
            # Little's law with the median latency: the in-flight a drained queue leaves behind in
            # the stable average does not count (change 2 in the module docstring).
            typical = snapshot.stable_rps * snapshot.p50_ms / 1000.0
            if typical < stable - EPS:
                stable, note = typical, f" (rate x p50; {snapshot.stable_inflight:.1f} measured)"
        return stable, snapshot.panic_inflight, note
