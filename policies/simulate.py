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
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    tick_s: float = 0.1
    slo_ms: float = 300.0
    min_replicas: int = int(BY_NAME["min_replicas"].default)
    max_replicas: int = 20
    initial_replicas: int | None = None  # None: enough for the trace's load at time 0
    noise: bool = False          # Poisson-like arrivals (normal approximation) instead of a fluid
    seed: int = 1


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

    def row(self) -> dict[str, Any]:
        return {"policy": self.policy, "trace": self.trace,
                "slo_violation_pct": round(self.slo_violation_pct, 3),
                "replica_seconds": round(self.replica_seconds, 1),
                "time_to_capacity_s": None if self.time_to_capacity_s is None else round(self.time_to_capacity_s, 1),
                "scale_events": self.scale_events}


def needed(rate: float, model: Model, target_inflight: float) -> int:
    """Replicas for a load at `target_inflight` each (Little's law: in flight = rate x service time)."""
    return max(model.min_replicas, math.ceil(rate * model.service_ms / 1000.0 / target_inflight - EPS))


def _percentiles(histograms: Sequence[Counter], qs: Sequence[float]) -> list[float | None]:
    merged: Counter = Counter()
    for h in histograms:
        merged.update(h)
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


def _start(queue: deque[list[float]], free: float, tick: int) -> Iterator[tuple[float, float]]:
    """Start up to `free` queued requests, oldest cohort first: (requests, ticks they waited) each."""
    while queue and free > EPS:
        cohort = queue[0]
        take = min(cohort[1], free)
        free -= take
        cohort[1] -= take
        if cohort[1] <= EPS:
            queue.popleft()
        yield take, tick - cohort[0]


def simulate(trace: Trace, policy_name: str | Policy, model: Model, settings: Mapping[str, float]) -> Result:
    """Run one policy (a name, `oracle`, or a Policy object) on one trace. Same inputs, same result."""
    dt = model.tick_s
    k = max(1, round(model.service_ms / 1000.0 / dt))    # ticks a request holds a slot
    service_s = k * dt
    ticks = int(round(trace.duration_s / dt))
    per_sample = max(1, round(model.sample_s / dt))
    per_decision = max(1, round(model.interval_s / dt))
    slo_ticks = (model.slo_ms / 1000.0 - service_s) / dt  # longest wait, in ticks, that is on time
    target = float(settings.get("target_inflight", 10.0))
    oracle = policy_name == "oracle"
    policy = None if oracle else make(policy_name, settings) if isinstance(policy_name, str) else policy_name
    if not isinstance(policy_name, str):
        policy_name = policy.name
    state = None if oracle else policy.initial_state()
    lookahead = int(round((model.cold_start_s + model.interval_s) / dt))
    rates = [trace.rate(i * dt) for i in range(ticks + lookahead + 1)]

    replicas = model.initial_replicas or needed(rates[0], model, target)
    replicas = min(max(replicas, model.min_replicas), model.max_replicas)
    ready = replicas
    starting: deque[float] = deque()          # times the starting replicas become ready
    queue: deque[list[float]] = deque()       # [arrival tick, requests] cohorts, oldest first
    queued = 0.0
    running: deque[float] = deque([0.0] * k)  # requests started in each of the last k ticks
    in_service = 0.0
    windows = SlidingWindows(float(settings.get("stable_window", 60.0)), float(settings.get("panic_window", 6.0)))
    stable_seconds = int(math.ceil(windows.stable_s))
    latency_by_second: deque[Counter] = deque(maxlen=stable_seconds)
    this_second: Counter = Counter()
    inflight_integral = completed = arrived = late = latency_sum = 0.0
    replica_seconds = 0.0
    scale_events = 0
    time_to_capacity = None
    series: list[tuple[float, float, int, int]] = []
    service_ms = service_s * 1000.0
    rng = random.Random(model.seed)  # the same noise for every policy: differences are theirs

    for i in range(ticks):
        now = i * dt
        while starting and starting[0] <= now + EPS:
            starting.popleft()
            ready += 1
        rate = rates[i]
        if trace.step_at is not None and time_to_capacity is None and now >= trace.step_at - EPS:
            if ready * model.slots / service_s >= rate - EPS:
                time_to_capacity = now - trace.step_at

        if i % per_sample == 0:
            windows.observe(now, inflight_integral, completed)
            latency_by_second.append(this_second)
            this_second = Counter()
            series.append((now, rate, replicas, ready))
        if i % per_decision == 0 and i > 0:
            if oracle:
                peak = max(rates[i:i + lookahead + 1])
                wanted = needed(peak, model, target)
            else:
                p50, p95, p99 = _percentiles(latency_by_second, (0.5, 0.95, 0.99))
                snapshot = Snapshot(now=now, replicas=replicas, ready_replicas=ready,
                                    p50_ms=p50, p95_ms=p95, p99_ms=p99, **vars(windows.averages(now)))
                decision, state = policy.decide(snapshot, state)
                wanted = int(decision.replicas)
            wanted = min(max(wanted, model.min_replicas), model.max_replicas)
            if wanted != replicas:
                scale_events += 1
                while replicas < wanted:
                    starting.append(now + model.cold_start_s)
                    replicas += 1
                while replicas > wanted:  # starting ones cost nothing yet to cancel, so go first
                    if starting:
                        starting.pop()
                    else:
                        ready -= 1
                    replicas -= 1

        # Arrivals join the queue; free slots take the oldest first.
        arrivals = rate * dt
        if model.noise and arrivals > 0:
            arrivals = max(0.0, rng.gauss(arrivals, math.sqrt(arrivals)))
        arrived += arrivals
        if arrivals > EPS:
            queue.append([i, arrivals])
            queued += arrivals
        in_service -= running.popleft()  # those started k ticks ago are done
        started = 0.0
        for take, wait in _start(queue, ready * model.slots - in_service, i):
            latency = wait * dt * 1000.0 + service_ms
            this_second[round(latency)] += take
            latency_sum += take * latency
            if wait > slo_ticks + EPS:
                late += take
            started += take
        queued = max(0.0, queued - started)
        running.append(started)
        in_service += started
        completed += running[0]  # completions are counted when they leave, k ticks on (k=1: now)
        inflight_integral += (queued + in_service) * dt
        replica_seconds += replicas * dt

    # Requests still waiting at the end are served in order at the final capacity, so every
    # request that arrived is judged (with no replica left, they all are late).
    capacity = ready * model.slots
    i = ticks
    while queue:
        if capacity <= EPS:
            late += sum(c for _, c in queue)
            break
        for take, wait in _start(queue, capacity, i):
            if wait > slo_ticks + EPS:
                late += take
            latency_sum += take * (wait * dt * 1000.0 + service_ms)
        i += 1
    duration = ticks * dt
    return Result(
        policy=policy_name, trace=trace.name,
        slo_violation_pct=100.0 * late / arrived if arrived > EPS else 0.0,
        replica_seconds=replica_seconds,
        time_to_capacity_s=time_to_capacity,
        scale_events=scale_events, series=series, requests=arrived,
        mean_inflight=inflight_integral / duration if duration else 0.0,
        mean_latency_ms=latency_sum / arrived if arrived > EPS else 0.0,
    )


def markdown(results: Sequence[Result]) -> str:
    oracle = {r.trace: r.replica_seconds for r in results if r.policy == "oracle"}
    lines = ["| trace | policy | SLO violations % | replica-seconds | x oracle | time to capacity s | scale events |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r.replica_seconds / oracle[r.trace]:.2f}" if oracle.get(r.trace) else "-"
        ttc = "-" if r.time_to_capacity_s is None else f"{r.time_to_capacity_s:.1f}"
        lines.append(f"| {r.trace} | {r.policy} | {r.slo_violation_pct:.2f} | {r.replica_seconds:.0f} | "
                     f"{ratio} | {ttc} | {r.scale_events} |")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = list(dict.fromkeys(r.trace for r in results))
    fig, axes = plt.subplots(len(traces), 1, figsize=(11, 3.2 * len(traces)), squeeze=False)
    for ax, trace in zip(axes[:, 0], traces):
        rows = [r for r in results if r.trace == trace]
        load = ax.twinx()
        t = [s[0] for s in rows[0].series]
        load.fill_between(t, [s[1] for s in rows[0].series], color="0.85", step="post", label="load")
        load.set_ylabel("requests/s")
        ax.set_zorder(load.get_zorder() + 1)
        ax.patch.set_visible(False)
        for r in rows:
            ax.step(t, [s[2] for s in r.series], where="post", label=r.policy,
                    linestyle="--" if r.policy == "oracle" else "-")
        ax.set_title(trace)
        ax.set_ylabel("replicas")
        ax.legend(loc="upper left", fontsize="small", ncol=3)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m policies.simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policies", default=",".join([*BUILTIN, "oracle"]),
                   help="comma-separated: built-in names, module:attr, and oracle")
    p.add_argument("--traces", default="step,spike,ramp,sine,sawtooth",
                   help="comma-separated bundled names or paths to time_s,rps CSV files")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of each bundled trace")
    p.add_argument("--service-ms", type=float, default=Model.service_ms)
    p.add_argument("--slots", type=int, default=Model.slots, help="requests a replica serves at once")
    p.add_argument("--cold-start", type=float, default=Model.cold_start_s,
                   help="seconds from a scale request to the replica serving")
    p.add_argument("--interval", type=BY_NAME["scale_interval"].parse, default=Model.interval_s,
                   help="seconds between decisions")
    p.add_argument("--sample", type=float, default=Model.sample_s, help="seconds between counter samples")
    p.add_argument("--tick", type=float, default=Model.tick_s, help="model time step, seconds")
    p.add_argument("--slo-ms", type=float, default=Model.slo_ms, help="a request is late above this")
    p.add_argument("--min-replicas", type=BY_NAME["min_replicas"].parse, default=Model.min_replicas)
    p.add_argument("--max-replicas", type=int, default=Model.max_replicas,
                   help="20: twice the largest need of the bundled traces, room to drain a queue")
    p.add_argument("--initial-replicas", type=int, default=None, help="default: enough for the load at 0 s")
    p.add_argument("--noise", action="store_true", help="random (Poisson-like) arrivals, same for every policy")
    p.add_argument("--seed", type=int, default=Model.seed)
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
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = Model(service_ms=args.service_ms, slots=args.slots, cold_start_s=args.cold_start,
                  interval_s=args.interval, sample_s=args.sample, tick_s=args.tick, slo_ms=args.slo_ms,
                  min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                  initial_replicas=args.initial_replicas, noise=args.noise, seed=args.seed)
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
    results = [simulate(trace, name, model, settings) for trace in traces for name in policies]
    if args.json:
        print(json.dumps([r.row() for r in results], indent=1))
    else:
        print(markdown(results))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
