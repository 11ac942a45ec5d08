"""Replay load traces against a model of a service, for every policy: `python -m policies.simulate`.

The model (every number is a flag): requests arrive at the trace's rate; each takes `service_ms`
of service; a replica serves at most `slots` at once at full speed and the rest queue (FIFO); a new
replica serves only after `cold_start_s`; the policy runs every `interval_s` on what the balancer
would have measured: SlidingWindows fed each second with the in-flight integral and completed
requests, and latency percentiles over the stable window. Its answer is clamped to
min_replicas..max_replicas, and scale-down takes starting replicas first, then ready ones.

It is a fluid model on coarse ticks (100 ms by default) rather than one event per request: a
tick's arrivals are one cohort, served in order as slots free up, so thirty runs take seconds.
A request's latency is its wait in whole ticks plus its service time; it is late when that is
over `slo_ms`.

`oracle` knows the future: at each decision it sets the replicas needed (same target per replica)
for the highest load between now and one cold start plus one interval ahead.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from policies import BUILTIN, Policy, PolicyError, Snapshot, make
from policies.settings import BY_NAME, SETTINGS, defaults
from policies.traces import Trace, bundled, from_csv
from policies.windows import SlidingWindows

EPS = 1e-9
# Settings the model plays itself (flags --interval, --min-replicas, --max-replicas, --cold-start).
MODEL_SETTINGS = ("scale_interval", "min_replicas", "max_replicas", "cold_start_s")


@dataclass(frozen=True)
class Model:
    service_ms: float = 100.0
    slots: int = 10              # requests a replica serves at once at full speed
    cold_start_s: float = float(BY_NAME["cold_start_s"].default)
    interval_s: float = float(BY_NAME["scale_interval"].default)  # between policy decisions
    sample_s: float = 1.0        # between samples of the counters
    tick_s: float | None = None  # the model's time step: 0.1 s, or 0.05 s with noise (service times spread)
    slo_ms: float = 300.0
    min_replicas: int = int(BY_NAME["min_replicas"].default)
    max_replicas: int = 20
    initial_replicas: int | None = None  # None: enough for the trace's load at time 0
    noise: bool = False          # Poisson arrivals and log-normal service times instead of a fluid
    seed: int = 1
    service_cv: float = 0.5      # with noise: the service times' standard deviation / mean
    hold_timeout_s: float = 60.0  # a request held (no ready replica) longer than this fails (504)
    scale_to_zero_after: float = float(BY_NAME["scale_to_zero_after"].default)  # the loop's idle rule


@dataclass
class Result:
    policy: str
    trace: str
    slo_violation_pct: float
    replica_seconds: float
    time_to_capacity_s: float | None
    scale_events: int
    series: list[tuple[float, float, int, int]] = field(default_factory=list, repr=False)
    # (time, load rps, replicas set, replicas ready) once a second, for plots and tests
    requests: float = 0.0
    mean_inflight: float = 0.0
    mean_latency_ms: float = 0.0
    started: int = 0             # replicas started (churn, with stopped)
    stopped: int = 0
    events: list[tuple[float, int, int]] = field(default_factory=list, repr=False)  # (time, from, to)
    held: float = 0.0            # requests that arrived while no replica was ready
    held_failed: float = 0.0     # ... of which were never served (hold timeout, or the run ended)
    seed: int = 1
    late_series: list[float] = field(default_factory=list, repr=False)  # late requests so far, once a second

    def events_after(self, t: float) -> int:
        return sum(1 for at, _, _ in self.events if at > t + EPS)

    def row(self) -> dict[str, Any]:
        return {"policy": self.policy, "trace": self.trace,
                "slo_violation_pct": round(self.slo_violation_pct, 3),
                "replica_seconds": round(self.replica_seconds, 1),
                "time_to_capacity_s": None if self.time_to_capacity_s is None else round(self.time_to_capacity_s, 1),
                "scale_events": self.scale_events, "started": self.started, "stopped": self.stopped,
                "held": round(self.held), "held_failed": round(self.held_failed), "seed": self.seed}


def tick(model: Model) -> float:
    """The time step: 100 ms, or 50 ms with noise so a 100 ms service time can spread over ticks."""
    if model.tick_s is not None:
        return model.tick_s
    return 0.05 if model.noise else 0.1


def needed(rate: float, model: Model, target_inflight: float) -> int:
    """Replicas for a load at `target_inflight` each (Little's law: in flight = rate x service time)."""
    return max(model.min_replicas, math.ceil(rate * model.service_ms / 1000.0 / target_inflight - EPS))


def _percentiles(histograms: Sequence[Mapping[int, float]], qs: Sequence[float]) -> list[float | None]:
    merged: defaultdict[int, float] = defaultdict(float)
    for h in histograms:
        for k, n in h.items():
            merged[k] += n
    total = sum(merged.values())
    if total <= EPS:
        return [None] * len(qs)
    out: list[float | None] = []
    keys = sorted(merged)
    for q in qs:
        seen, goal = 0.0, q * total
        for k in keys:
            seen += merged[k]
            if seen >= goal - EPS:
                out.append(float(k))
                break
        else:
            out.append(float(keys[-1]))
    return out


def service_ticks(model: Model) -> list[float]:
    """P(a request holds a slot for k ticks), k = 0, 1, ...: the service-time distribution on ticks.

    Without noise every request takes `service_ms` (rounded to whole ticks, at least one). With
    noise the service times are log-normal with mean `service_ms` and the given coefficient of
    variation, rounded to whole ticks at random in proportion (1.3 ticks: 1 tick 70% of the time, 2
    ticks 30%); those under one tick take one, so the log-normal's own mean is set a little lower
    for the ticks' mean to be `service_ms` (Little's law, and the oracle, count on it).
    """
    dt = tick(model)
    if not model.noise or model.service_cv <= 0:
        k = max(1, round(model.service_ms / 1000.0 / dt))
        return [0.0] * k + [1.0]
    goal = model.service_ms / 1000.0 / dt           # in ticks
    low, high = 0.0, goal
    for _ in range(50):
        mid = (low + high) / 2
        p = _lognormal_ticks(mid, model.service_cv)
        if sum(k * x for k, x in enumerate(p)) < goal:
            low = mid
        else:
            high = mid
    return _lognormal_ticks(high, model.service_cv)


def _lognormal_ticks(mean: float, cv: float) -> list[float]:
    sigma2 = math.log(1.0 + cv ** 2)
    mu, sigma = math.log(mean) - sigma2 / 2, math.sqrt(sigma2)
    top = int(math.ceil(math.exp(mu + 4.0 * sigma))) + 1   # beyond: about 3e-5 of requests

    def cdf(x: float) -> float:
        return 0.0 if x <= 0 else 0.5 * (1.0 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2))))

    def partial_mean(a: float, b: float) -> float:  # E[X; a < X <= b]
        def m(x: float) -> float:
            if x <= 0:
                return 0.0
            z = (math.log(x) - mu - sigma2) / (sigma * math.sqrt(2))
            return math.exp(mu + sigma2 / 2) * 0.5 * (1 + math.erf(z))
        return m(b) - m(a)

    p = [0.0] * (top + 1)
    p[1] += cdf(1.0)
    for j in range(1, top):   # X in (j, j+1]: k = j+1 with probability X - j, else j
        mass = cdf(j + 1.0) - cdf(float(j))
        up = partial_mean(float(j), j + 1.0) - j * mass
        p[j + 1] += up
        p[j] += mass - up
    p[top] += 1.0 - cdf(float(top))
    total = sum(p)
    return [x / total for x in p]


Arrivals = list[list[float]]  # per tick: requests arriving with service k ticks, k = 0, 1, ...

_ARRIVALS: dict[tuple[Any, ...], Arrivals] = {}


def arrivals(trace: Trace, model: Model, ticks: int) -> Arrivals:
    """The requests arriving in each tick, by service ticks: the same for every policy of a run.

    Without noise, a tick brings rate x tick requests (a fluid). With noise, a Poisson process of
    the trace's rate (time-rescaled, so the rate may change from tick to tick), each request with
    its own service time; two seeded generators, one for arrivals and one for service times.
    """
    dt = tick(model)
    key = (trace, model.noise, model.seed, dt, model.service_ms, model.service_cv, ticks)
    if key in _ARRIVALS:
        return _ARRIVALS[key]
    p = service_ticks(model)
    out: Arrivals = []
    if not model.noise:
        k = len(p) - 1
        for i in range(ticks):
            row = [0.0] * (k + 1)
            row[k] = trace.rate(i * dt) * dt
            out.append(row)
    else:
        when, what = random.Random(model.seed), random.Random(model.seed * 7919 + 1)
        ks = list(range(len(p)))
        cum = []
        acc = 0.0
        for x in p:
            acc += x
            cum.append(acc)
        gap = when.expovariate(1.0)  # the intensity left until the next arrival
        for i in range(ticks):
            budget = trace.rate(i * dt) * dt
            n = 0
            while gap <= budget:
                n += 1
                budget -= gap
                gap = when.expovariate(1.0)
            gap -= budget
            row = [0.0] * len(p)
            if n:
                for k in what.choices(ks, cum_weights=cum, k=n):
                    row[k] += 1.0
            out.append(row)
    if len(_ARRIVALS) > 64:
        _ARRIVALS.clear()
    _ARRIVALS[key] = out
    return out


class _Cohort:
    """Requests that arrived in one tick and wait for a slot: how many, by service ticks."""

    __slots__ = ("tick", "count", "by_k", "held")

    def __init__(self, tick: int, by_k: list[float], held: bool) -> None:
        self.tick, self.by_k, self.held = tick, list(by_k), held
        self.count = sum(by_k)


def simulate(trace: Trace, policy_name: str | Policy, model: Model, settings: Mapping[str, float]) -> Result:
    """Run one policy (a name, `oracle`, or a Policy object) on one trace. Same inputs, same result."""
    dt = tick(model)
    ticks = int(round(trace.duration_s / dt))
    per_sample = max(1, round(model.sample_s / dt))
    per_decision = max(1, round(model.interval_s / dt))
    slo_s = model.slo_ms / 1000.0
    hold_ticks = model.hold_timeout_s / dt
    target = float(settings.get("target_inflight", 10.0))
    policy: Policy | None = None
    if isinstance(policy_name, str):
        if policy_name != "oracle":
            policy = make(policy_name, settings)
        name = policy_name
    else:
        policy, name = policy_name, policy_name.name
    state = None if policy is None else policy.initial_state()
    lookahead = int(round((model.cold_start_s + model.interval_s) / dt))
    rates = [trace.rate(i * dt) for i in range(ticks + lookahead + 1)]
    incoming = arrivals(trace, model, ticks)
    kmax = len(incoming[0]) - 1 if incoming else 1

    if model.initial_replicas is None:
        replicas = needed(rates[0], model, target)
    else:
        replicas = model.initial_replicas
    replicas = min(max(replicas, model.min_replicas), model.max_replicas)
    ready = replicas
    starting: deque[tuple[float, float]] = deque()  # (asked at, ready at) of the starting replicas
    queue: deque[_Cohort] = deque()            # oldest first
    queued = 0.0
    ends: deque[float] = deque([0.0] * kmax)   # requests freeing their slot 1, 2, ... ticks from now
    in_service = 0.0
    windows = SlidingWindows(float(settings.get("stable_window", 60.0)), float(settings.get("panic_window", 6.0)))
    stable_seconds = int(math.ceil(windows.stable_s))
    latency_by_second: deque[defaultdict[int, float]] = deque(maxlen=stable_seconds)
    this_second: defaultdict[int, float] = defaultdict(float)
    inflight_integral = completed = arrived = late = latency_sum = held = held_failed = 0.0
    replica_seconds = 0.0
    started_replicas = stopped_replicas = 0
    events: list[tuple[float, int, int]] = []
    time_to_capacity = None
    series: list[tuple[float, float, int, int]] = []
    late_series: list[float] = []
    last_busy = 0.0                 # when a request was last in flight or arrived
    measured_cold_start: float | None = None
    next_decision = per_decision
    decided = -1                    # the tick of the last decision

    def decide(i: int, now: float) -> None:
        nonlocal state, replicas, ready, started_replicas, stopped_replicas
        held_now = round(queued) if ready == 0 else 0
        if policy is None:
            peak = max(rates[i:i + lookahead + 1])
            wanted = needed(peak, model, target)
        else:
            p50, p95, p99 = _percentiles(latency_by_second, (0.5, 0.95, 0.99))
            snapshot = Snapshot(now=now, replicas=replicas, ready_replicas=ready,
                                p50_ms=p50, p95_ms=p95, p99_ms=p99, held=held_now,
                                idle_s=now - last_busy, cold_start_s=measured_cold_start,
                                **vars(windows.averages(now)))
            decision, state = policy.decide(snapshot, state)
            wanted = int(decision.replicas)
        wanted = min(max(wanted, model.min_replicas), model.max_replicas)
        # The control loop's idle rule, whatever the policy says (the oracle included): zero only
        # after scale_to_zero_after seconds with nothing in flight or arriving.
        if wanted == 0 < replicas and (now - last_busy < model.scale_to_zero_after - EPS or queued > EPS):
            wanted = min(1, model.max_replicas)
        if wanted != replicas:
            events.append((now, replicas, wanted))
            while replicas < wanted:
                starting.append((now, now + model.cold_start_s))
                started_replicas += 1
                replicas += 1
            while replicas > wanted:  # starting ones cost nothing yet to cancel, so go first
                if starting:
                    starting.pop()
                else:
                    ready -= 1
                stopped_replicas += 1
                replicas -= 1

    for i in range(ticks):
        now = i * dt
        while starting and starting[0][1] <= now + EPS:
            asked, _ = starting.popleft()
            ready += 1
            measured_cold_start = now - asked  # what the balancer measures: scale request -> serving
        rate = rates[i]
        if trace.step_at is not None and time_to_capacity is None and now >= trace.step_at - EPS:
            if ready * model.slots / (model.service_ms / 1000.0) >= rate - EPS:
                time_to_capacity = now - trace.step_at

        if i % per_sample == 0:
            windows.observe(now, inflight_integral, completed)
            latency_by_second.append(this_second)
            this_second = defaultdict(float)
            series.append((now, rate, replicas, ready))
            late_series.append(late)
        if i == next_decision:
            decide(i, now)
            decided = i
            next_decision += per_decision

        # Arrivals join the queue; free slots take the oldest first.
        row = incoming[i]
        count = sum(row)
        if count > EPS:
            arrived += count
            last_busy = now
            queue.append(_Cohort(i, row, ready == 0))
            queued += count
            if ready == 0:
                held += count
                if replicas == 0 and decided != i:
                    decide(i, now)  # the first held request triggers a decision at once
                    decided = i
        if queued + in_service > EPS:
            last_busy = now
        in_service -= ends.popleft()  # those whose service ended free their slots now
        ends.append(0.0)
        free = ready * model.slots - in_service
        while queue and free > EPS:
            cohort = queue[0]
            take = min(cohort.count, free)
            share = take / cohort.count
            wait_s = (i - cohort.tick) * dt
            for k in range(1, kmax + 1):
                n = cohort.by_k[k] * share
                if n <= EPS:
                    continue
                cohort.by_k[k] -= n
                latency = wait_s + k * dt
                this_second[round(latency * 1000.0)] += n
                latency_sum += n * latency * 1000.0
                if latency > slo_s + EPS:
                    late += n
                ends[k - 1] += n
            cohort.count -= take
            free -= take
            queued -= take
            in_service += take
            if cohort.count <= EPS:
                queue.popleft()
        queued = max(0.0, queued)
        # Held requests (no replica ready) give up after the hold timeout, as the balancer's 504.
        if ready == 0:
            while queue and i - queue[0].tick > hold_ticks:
                gone = queue.popleft()
                late += gone.count
                held_failed += gone.count
                queued -= gone.count
        completed += ends[0]  # completions are counted as they leave, at the end of their last tick
        inflight_integral += (queued + in_service) * dt
        replica_seconds += replicas * dt

    # Requests still waiting at the end are served in order at the final capacity, so every
    # request that arrived is judged (with no replica left, they all are late and held ones failed).
    capacity = ready * model.slots
    i = ticks
    while queue:
        if capacity <= EPS:
            for cohort in queue:
                late += cohort.count
                held_failed += cohort.count
            break
        free = capacity
        while queue and free > EPS:
            cohort = queue[0]
            take = min(cohort.count, free)
            wait_s = (i - cohort.tick) * dt
            for k in range(1, kmax + 1):
                n = cohort.by_k[k] * take / cohort.count
                cohort.by_k[k] -= n
                if wait_s + k * dt > slo_s + EPS:
                    late += n
                latency_sum += n * (wait_s + k * dt) * 1000.0
            cohort.count -= take
            free -= take
            if cohort.count <= EPS:
                queue.popleft()
        i += 1
    duration = ticks * dt
    return Result(
        policy=name, trace=trace.name,
        slo_violation_pct=100.0 * late / arrived if arrived > EPS else 0.0,
        replica_seconds=replica_seconds,
        time_to_capacity_s=time_to_capacity,
        scale_events=len(events), series=series, requests=arrived,
        mean_inflight=inflight_integral / duration if duration else 0.0,
        mean_latency_ms=latency_sum / arrived if arrived > EPS else 0.0,
        started=started_replicas, stopped=stopped_replicas, events=events,
        held=held, held_failed=held_failed, seed=model.seed, late_series=late_series,
    )


def summary(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One row per (trace, policy) over the seeds run: the mean and the worst of each figure.

    `x_oracle` is each seed's replica-seconds over the oracle's on the same seed (same arrivals).
    """
    oracle = {(r.trace, r.seed): r.replica_seconds for r in results if r.policy == "oracle"}
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.trace, r.policy), []).append(r)
    rows = []
    for (trace, policy), rs in groups.items():
        figures: dict[str, list[float]] = {
            "slo_violation_pct": [r.slo_violation_pct for r in rs],
            "replica_seconds": [r.replica_seconds for r in rs],
            "scale_events": [float(r.scale_events) for r in rs],
            "events_after_60s": [float(r.events_after(60.0)) for r in rs],
            "churn": [float(r.started + r.stopped) for r in rs],
            "held": [r.held for r in rs],
            "held_failed": [r.held_failed for r in rs],
        }
        ratios = [r.replica_seconds / oracle[trace, r.seed] for r in rs if oracle.get((trace, r.seed))]
        if ratios:
            figures["x_oracle"] = ratios
        ttc = [r.time_to_capacity_s for r in rs]
        row: dict[str, Any] = {"trace": trace, "policy": policy, "seeds": [r.seed for r in rs]}
        for key, values in figures.items():
            row[key] = {"mean": sum(values) / len(values), "worst": max(values)}
        row["time_to_capacity_s"] = (None if any(t is None for t in ttc) else
                                     {"mean": sum(ttc) / len(ttc), "worst": max(ttc)})  # type: ignore[arg-type, type-var]
        rows.append(row)
    return rows


def markdown(results: Sequence[Result]) -> str:
    """The table: one row per trace and policy; with several seeds each cell is `mean (worst)`."""
    several = len({r.seed for r in results}) > 1

    def cell(figure: dict[str, float] | None, fmt: str) -> str:
        if figure is None:
            return "-"
        text = format(figure["mean"], fmt)
        return f"{text} ({format(figure['worst'], fmt)})" if several else text

    lines = ["| trace | policy | SLO violations % | replica-seconds | x oracle | time to capacity s "
             "| scale events | after 60 s | churn (started + stopped) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary(results):
        lines.append(
            f"| {row['trace']} | {row['policy']} | {cell(row['slo_violation_pct'], '.2f')} | "
            f"{cell(row['replica_seconds'], '.0f')} | {cell(row.get('x_oracle'), '.2f')} | "
            f"{cell(row['time_to_capacity_s'], '.1f')} | {cell(row['scale_events'], '.0f')} | "
            f"{cell(row['events_after_60s'], '.0f')} | {cell(row['churn'], '.0f')} |")
    held = [row for row in summary(results) if row["held"]["worst"] > 0]
    if held:
        lines.append("")
        lines.append("Held requests (arrived with no replica ready) and those never served:")
        lines.extend(f"- {row['trace']} {row['policy']}: {cell(row['held'], '.0f')} held, "
                     f"{cell(row['held_failed'], '.0f')} not served" for row in held)
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str, by_policy: bool = False) -> None:
    """Load and replicas, one panel per trace (the first seed only); `by_policy`: one column per
    policy, side by side, each with the oracle dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0].seed if results else 1
    results = [r for r in results if r.seed == first]
    traces = list(dict.fromkeys(r.trace for r in results))
    columns: list[list[str]] = [list(dict.fromkeys(r.policy for r in results))]
    if by_policy:
        columns = [[p, "oracle"] for p in columns[0] if p != "oracle"]
    fig, axes = plt.subplots(len(traces), len(columns), figsize=(11 if len(columns) == 1 else 6.5 * len(columns),
                                                                 3.2 * len(traces)), squeeze=False, sharey="row")
    for row, trace in enumerate(traces):
        for col, shown in enumerate(columns):
            ax = axes[row, col]
            rows = [r for r in results if r.trace == trace and r.policy in shown]
            load = ax.twinx()
            t = [s[0] for s in rows[0].series]
            load.fill_between(t, [s[1] for s in rows[0].series], color="0.85", step="post", label="load")
            load.set_ylabel("requests/s")
            ax.set_zorder(load.get_zorder() + 1)
            ax.patch.set_visible(False)
            for r in rows:
                ax.step(t, [s[2] for s in r.series], where="post", linestyle="--" if r.policy == "oracle" else "-",
                        label=f"{r.policy} ({r.scale_events} scale events)")
            ax.set_title(trace if len(columns) == 1 else f"{trace}: {shown[0]}")
            ax.set_ylabel("replicas")
            ax.legend(loc="upper left", fontsize="small", ncol=3 if len(columns) == 1 else 1)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m policies.simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policies", default=",".join([*BUILTIN, "oracle"]),
                   help="comma-separated: built-in names, module:attr, and oracle")
    p.add_argument("--traces", default="step,spike,ramp,sine,sawtooth,steady",
                   help="comma-separated bundled names or paths to time_s,rps CSV files")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of each bundled trace")
    p.add_argument("--service-ms", type=float, default=Model.service_ms)
    p.add_argument("--slots", type=int, default=Model.slots, help="requests a replica serves at once")
    p.add_argument("--cold-start", type=float, default=Model.cold_start_s,
                   help="seconds from a scale request to the replica serving")
    p.add_argument("--interval", type=BY_NAME["scale_interval"].parse, default=Model.interval_s,
                   help="seconds between decisions")
    p.add_argument("--sample", type=float, default=Model.sample_s, help="seconds between counter samples")
    p.add_argument("--tick", type=float, default=None, help="model time step, seconds (default 0.1, 0.05 with --noise)")
    p.add_argument("--slo-ms", type=float, default=Model.slo_ms, help="a request is late above this")
    p.add_argument("--min-replicas", type=BY_NAME["min_replicas"].parse, default=Model.min_replicas)
    p.add_argument("--max-replicas", type=int, default=Model.max_replicas,
                   help="20: twice the largest need of the bundled traces, room to drain a queue")
    p.add_argument("--initial-replicas", type=int, default=None, help="default: enough for the load at 0 s")
    p.add_argument("--noise", action="store_true", help="random (Poisson-like) arrivals, same for every policy")
    p.add_argument("--seed", type=int, default=Model.seed, help="the first seed")
    p.add_argument("--seeds", type=int, default=1,
                   help="run seeds seed, seed+1, ...: the table shows the mean and (the worst)")
    p.add_argument("--service-cv", type=float, default=Model.service_cv,
                   help="with --noise: spread of the log-normal service times (std / mean)")
    p.add_argument("--hold-timeout", type=float, default=Model.hold_timeout_s,
                   help="seconds a request is held with no replica ready before it fails")
    # Every policy setting of policies/settings.py is a flag, with the balancer's default; those the
    # model itself plays (interval, replicas bounds) are the model's flags above. --cold-start is the
    # model's real cold start; the policies' configured guess is --set cold_start_s=...
    for s in SETTINGS:
        if s.name in MODEL_SETTINGS:
            continue
        shown = s.default or "derived"
        p.add_argument("--" + s.name.replace("_", "-"), type=s.parse, default=argparse.SUPPRESS, metavar="N",
                       help=f"{s.help} ({s.env}, default {shown})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting by name, a user policy's own too, e.g. cold_start_s=8 (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="draw load and replicas, one panel per trace")
    p.add_argument("--plot-by-policy", action="store_true",
                   help="with --plot: one column per policy, side by side, the oracle dashed in each")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = Model(service_ms=args.service_ms, slots=args.slots, cold_start_s=args.cold_start,
                  interval_s=args.interval, sample_s=args.sample, tick_s=args.tick, slo_ms=args.slo_ms,
                  min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                  initial_replicas=args.initial_replicas, noise=args.noise, seed=args.seed,
                  service_cv=args.service_cv, hold_timeout_s=args.hold_timeout,
                  scale_to_zero_after=getattr(args, "scale_to_zero_after", Model.scale_to_zero_after))
    settings: dict[str, float] = {**defaults(), "scale_interval": args.interval,
                                  "min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    for s in SETTINGS:
        given = getattr(args, s.name, None)
        if given is not None and s.name not in MODEL_SETTINGS:
            settings[s.name] = given
    try:
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expects KEY=VALUE")
            settings[key.strip()] = float(value)
        known = bundled(args.duration)
        traces = [known[n] if n in known else from_csv(n) for n in args.traces.split(",") if n]
        policies = [n for n in args.policies.split(",") if n]
        for name in policies:
            if name != "oracle":
                make(name, settings)  # fail before any run on a bad name or setting
    except (ValueError, OSError, PolicyError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("simulate: --seeds: expects an integer >= 1", file=sys.stderr)
        return 2
    results = [simulate(trace, name, replace(model, seed=seed), settings)
               for trace in traces for name in policies for seed in range(args.seed, args.seed + args.seeds)]
    if args.json:
        print(json.dumps([r.row() for r in results] if args.seeds == 1 else summary(results), indent=1))
    else:
        print(markdown(results))
    if args.plot:
        plot(results, args.plot, by_policy=args.plot_by_policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
