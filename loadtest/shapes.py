"""Load shapes: `tick()` returns (users, spawn_rate) or None to stop, as locust's LoadTestShape.

Each bundled shape is a pure function of run time (`at(t)`), so it is tested without a clock and reused as-is
under real locust (see loadtest/locustfile.py).
"""

from __future__ import annotations

import math
import time
from typing import Any


class LoadTestShape:
    """Subclass and implement tick(); get_run_time() is seconds since the run (or reset_time) began."""

    abstract = True

    def __init__(self) -> None:
        self._start = time.monotonic()

    def reset_time(self) -> None:
        self._start = time.monotonic()

    def get_run_time(self) -> float:
        return time.monotonic() - self._start

    def tick(self) -> tuple[int, float] | None:
        raise NotImplementedError


class _PureShape(LoadTestShape):
    abstract = True

    def tick(self) -> tuple[int, float] | None:
        return self.at(self.get_run_time())

    def at(self, t: float) -> tuple[int, float] | None:
        raise NotImplementedError

    @property
    def total(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class StepShape(_PureShape):
    """`low` users, then `high` users from `start` for `duration` seconds, then `low` again until `total`.

    The shape of the demo: latency reacts to the step, replicas follow it up and come back down after it.
    """

    def __init__(self, low: int = 8, high: int = 64, start: float = 20, duration: float = 40,
                 total: float | None = None, spawn_rate: float = 100) -> None:
        super().__init__()
        if low < 0 or high < 0 or start < 0 or duration <= 0 or spawn_rate <= 0:
            raise ValueError("StepShape needs low, high, start >= 0 and duration, spawn_rate > 0")
        self.low, self.high, self.start, self.duration = int(low), int(high), start, duration
        self.spawn_rate = spawn_rate
        self._total = total if total is not None else start + duration + 60

    @property
    def total(self) -> float:
        return self._total

    def at(self, t: float) -> tuple[int, float] | None:
        if t >= self._total:
            return None
        users = self.high if self.start <= t < self.start + self.duration else self.low
        return users, self.spawn_rate


class SpikeShape(_PureShape):
    """`base` users with a short burst to `peak` at `at_s` for `duration` seconds, all spawned at once."""

    def __init__(self, base: int = 8, peak: int = 128, at_s: float = 20, duration: float = 10,
                 total: float | None = None) -> None:
        super().__init__()
        if base < 0 or peak < 0 or at_s < 0 or duration <= 0:
            raise ValueError("SpikeShape needs base, peak, at_s >= 0 and duration > 0")
        self.base, self.peak, self.at_s, self.duration = int(base), int(peak), at_s, duration
        self._total = total if total is not None else at_s + duration + 60

    @property
    def total(self) -> float:
        return self._total

    def at(self, t: float) -> tuple[int, float] | None:
        if t >= self._total:
            return None
        users = self.peak if self.at_s <= t < self.at_s + self.duration else self.base
        # A spike arrives at once: spawn the whole difference within one tick.
        return users, float(max(self.peak, 1))


class RampShape(_PureShape):
    """From `start_users` to `end_users` linearly over `ramp` seconds, then held for `hold` seconds."""

    def __init__(self, start_users: int = 0, end_users: int = 64, ramp: float = 60, hold: float = 0) -> None:
        super().__init__()
        if start_users < 0 or end_users < 0 or ramp <= 0 or hold < 0:
            raise ValueError("RampShape needs users >= 0, ramp > 0 and hold >= 0")
        self.start_users, self.end_users, self.ramp, self.hold = int(start_users), int(end_users), ramp, hold

    @property
    def total(self) -> float:
        return self.ramp + self.hold

    def at(self, t: float) -> tuple[int, float] | None:
        if t >= self.total:
            return None
        frac = min(t / self.ramp, 1.0)
        users = round(self.start_users + (self.end_users - self.start_users) * frac)
        # Fast enough to follow the line within a tick, never slower than 1 user/s.
        rate = max(abs(self.end_users - self.start_users) / self.ramp * 2, 1.0)
        return users, rate


class DailySineShape(_PureShape):
    """A day's traffic compressed into `period` seconds: `mean` -/+ `amplitude` users, starting at the
    night-time low, for `cycles` periods."""

    def __init__(self, mean: int = 40, amplitude: int = 32, period: float = 120, cycles: float = 1) -> None:
        super().__init__()
        if amplitude < 0 or amplitude > mean or period <= 0 or cycles <= 0:
            raise ValueError("DailySineShape needs 0 <= amplitude <= mean and period, cycles > 0")
        self.mean, self.amplitude, self.period, self.cycles = int(mean), int(amplitude), period, cycles

    @property
    def total(self) -> float:
        return self.period * self.cycles

    def at(self, t: float) -> tuple[int, float] | None:
        if t >= self.total:
            return None
        users = round(self.mean - self.amplitude * math.cos(2 * math.pi * t / self.period))
        # Peak slope of the sine is 2*pi*A/period users/s; spawn at twice that so the shape is tracked.
        rate = max(4 * math.pi * self.amplitude / self.period, 1.0)
        return users, rate


SHAPES: dict[str, type[_PureShape]] = {
    "step": StepShape,
    "spike": SpikeShape,
    "ramp": RampShape,
    "sine": DailySineShape,
    "daily": DailySineShape,
}


def parse_shape(spec: str) -> _PureShape:
    """`NAME` or `NAME:key=value,key=value`, e.g. `step:low=5,high=50,start=10,duration=30`."""
    name, _, params = spec.partition(":")
    cls = SHAPES.get(name.strip().lower())
    if cls is None:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(sorted(SHAPES))}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"shape parameter {item!r} is not key=value")
        num = float(value)
        kwargs[key.strip()] = int(num) if num.is_integer() else num
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad parameters for shape {name!r}: {exc}") from None
