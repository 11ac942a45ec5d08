"""Issue 11's simulator bars for the default policy, seed by seed, each figure beside its bar.

    .venv/bin/python bench/policy_seeds.py                 # seeds 1-20
    .venv/bin/python bench/policy_seeds.py 9 10 19         # just these

With --noise at a 70% target (7 in flight per replica of 10 slots), on every bundled trace: SLO
violations no worse than `hpa`'s and `step`'s (compared strictly); replica-seconds at most 1.3x
the oracle's; scale events at most 1.5x the oracle's + 4 on step, spike and ramp; at most 2 events
after the first minute on steady. A seed takes about 5 s. Exits 1 when a bar is missed.
"""

from __future__ import annotations

import sys
import time

from policies.simulate import Model, Result, simulate
from policies.traces import bundled

# The simulator's defaults the unit tests use (tests/unit/test_simulate.py SETTINGS), at 70%.
SETTINGS = {"target_inflight": 7, "target_rps": 50, "target_p95_ms": 250, "stable_window": 60,
            "panic_window": 6, "scale_interval": 2, "max_scale_up_rate": 1000, "max_scale_down_rate": 2}
TRACES = ("step", "spike", "ramp", "sine", "sawtooth", "steady")


def bars(trace: str, rows: dict[str, Result]) -> list[tuple[str, float, float]]:
    """(name, the default's figure, its bar) for one trace."""
    mine, oracle = rows["concurrency"], rows["oracle"]
    out = [("SLO %", mine.slo_violation_pct, min(rows["step"].slo_violation_pct, rows["hpa"].slo_violation_pct)),
           ("replica-s", mine.replica_seconds, 1.3 * oracle.replica_seconds)]
    if trace in ("step", "spike", "ramp"):
        out.append(("events", mine.scale_events, 1.5 * oracle.scale_events + 4))
    if trace == "steady":
        out.append(("events > 60 s", mine.events_after(60.0), 2))
    return out


def main(argv: list[str]) -> int:
    seeds = [int(s) for s in argv] or list(range(1, 21))
    traces, missed = bundled(), 0
    print("| seed | trace | bar | default | bar value | margin | |\n|---:|---|---|---:|---:|---:|---|")
    for seed in seeds:
        began, model = time.monotonic(), Model(noise=True, seed=seed)
        for trace in TRACES:
            rows = {p: simulate(traces[trace], p, model, SETTINGS) for p in ("concurrency", "step", "hpa", "oracle")}
            for name, figure, bar in bars(trace, rows):
                ok = figure <= bar
                missed += not ok
                print(f"| {seed} | {trace} | {name} | {figure:.5f} | {bar:.5f} | {bar - figure:.5f} | "
                      f"{'ok' if ok else 'MISSED'} |", flush=True)
        print(f"<!-- seed {seed}: {time.monotonic() - began:.1f} s -->", file=sys.stderr)
    print(f"\n{missed} bar(s) missed over seeds {seeds[0]}..{seeds[-1]}" if missed else "\nevery bar met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
