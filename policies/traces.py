"""Load traces for the simulator: a rate (requests per second) as a function of time.

The bundled ones are the issues' (5 and 11, 8 for `bursty`); a user's is a CSV of `time_s,rps` rows, linearly
interpolated between rows (two rows at nearly the same time make a step) and held after the last.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    rate: Callable[[float], float]
    step_at: float | None = None   # when the load steps up, for time_to_capacity_s


def bundled(duration_s: float = 600.0) -> dict[str, Trace]:
    return {
        "step": Trace("step", duration_s, lambda t: 100.0 if t < 120 else 1000.0, step_at=120.0),
        "spike": Trace("spike", duration_s, lambda t: 1000.0 if 200 <= t < 230 else 100.0),
        "ramp": Trace("ramp", duration_s, lambda t: 1000.0 * min(t / duration_s, 1.0)),
        "sine": Trace("sine", duration_s, lambda t: 550.0 + 450.0 * math.sin(2 * math.pi * t / 300.0)),
        "sawtooth": Trace("sawtooth", duration_s, lambda t: 100.0 + 900.0 * (t % 60.0) / 60.0),
        # Constant load: with --noise, what a policy does when nothing changes but chance.
        "steady": Trace("steady", duration_s, lambda t: 500.0),
        # Serverless traffic: a 30 s burst every 7 minutes (60-90 s, 480-510 s, ...), nothing between,
        # so with min_replicas 0 the service idles to zero (after the default 300 s) and cold-starts.
        "bursty": Trace("bursty", duration_s, _bursty),
    }


BURST_EVERY_S, BURST_S, BURST_RPS = 420.0, 30.0, (600.0, 900.0, 300.0, 1000.0)


def _bursty(t: float) -> float:
    n, at = divmod(t - 60.0, BURST_EVERY_S)
    return BURST_RPS[int(n) % len(BURST_RPS)] if t >= 60.0 and at < BURST_S else 0.0


def from_csv(path: str) -> Trace:
    """A trace from `time_s,rps` rows (a header row is allowed). Raises ValueError with the line."""
    times: list[float] = []
    rates: list[float] = []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            try:
                t, r = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if number == 1:
                    continue  # the header
                raise ValueError(f"{path}:{number}: expects time_s,rps numbers") from None
            if r < 0 or (times and t < times[-1]):
                raise ValueError(f"{path}:{number}: expects rps >= 0 and times in order")
            times.append(t)
            rates.append(r)
    if not times:
        raise ValueError(f"{path}: no time_s,rps rows")

    def rate(t: float) -> float:
        i = bisect_right(times, t)
        if i == 0:
            return rates[0]
        if i == len(times):
            return rates[-1]
        t0, t1 = times[i - 1], times[i]
        return rates[i - 1] + (rates[i] - rates[i - 1]) * (t - t0) / (t1 - t0)

    name = path.rsplit("/", 1)[-1].removesuffix(".csv")
    return Trace(name, times[-1], rate)
