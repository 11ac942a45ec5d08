"""Load shapes: `tick()` returns (users, spawn_rate) or None to stop, as locust's LoadTestShape.

Each bundled shape is a pure function of run time (`at(t)`), so it is tested without a clock and reused as-is
under real locust (see loadtest/locustfile.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class LoadTestShape:
    """Subclass and implement tick(); get_run_time() is seconds since the run (or reset_time) began."""

    abstract = True
    runner: Any = None  # set by the runner before the first tick, as locust's
    use_common_options = False

    def __init__(self) -> None:
        self._start = time.monotonic()

    def get_current_user_count(self) -> int:
        return int(self.runner.user_count) if self.runner is not None else 0

    def reset_time(self) -> None:
        self._start = time.monotonic()

    def get_run_time(self) -> float:
        return time.monotonic() - self._start

    def tick(self) -> tuple[int, float] | None:
        raise NotImplementedError


class _PureShape(LoadTestShape):
    """A shape that runs until `end` seconds; subclasses set `end` and give the load before it in `_load(t)`."""

    abstract = True
    end: float

    def tick(self) -> tuple[int, float] | None:
        return self.at(self.get_run_time())

    def at(self, t: float) -> tuple[int, float] | None:
        return None if t >= self.end else self._load(t)

    def _load(self, t: float) -> tuple[int, float]:
        raise NotImplementedError

    @property
    def total(self) -> float:
        return self.end

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "runner")
        return f"{type(self).__name__}({params})"


class StepShape(_PureShape):
    """`low` users, then `high` users from `start` for `length` seconds, then `low` again until `end`.

    The demo's shape: latency reacts to the step, replicas follow it up and come back down after it.
    """

    def __init__(self, low: int = 4, high: int = 64, start: float = 15, length: float = 45,
                 end: float | None = None, spawn_rate: float = 100) -> None:
        super().__init__()
        end = start + length + 60 if end is None else end
        if low < 0 or high < 0 or start < 0 or length <= 0 or spawn_rate <= 0 or end <= 0:
            raise ValueError("step needs low, high, start >= 0 and length, spawn_rate, end > 0")
        self.low, self.high, self.start, self.length = int(low), int(high), start, length
        self.end, self.spawn_rate = end, spawn_rate

    def _load(self, t: float) -> tuple[int, float]:
        users = self.high if self.start <= t < self.start + self.length else self.low
        return users, self.spawn_rate


class SpikeShape(StepShape):
    """A short step: `low` users, a burst to `high` at `start` for `length` seconds, all spawned within one
    tick (spawn rate = `high`), then `low` until `end`."""

    def __init__(self, low: int = 4, high: int = 128, start: float = 15, length: float = 10,
                 end: float | None = None) -> None:
        super().__init__(low, high, start, length, end, spawn_rate=float(max(int(high), 1)))


class RampShape(_PureShape):
    """From `low` to `high` users linearly over `length` seconds, then held at `high` until `end`."""

    def __init__(self, low: int = 0, high: int = 64, length: float = 60, end: float | None = None) -> None:
        super().__init__()
        end = length if end is None else end
        if low < 0 or high < 0 or length <= 0 or end <= 0:
            raise ValueError("ramp needs low, high >= 0 and length, end > 0")
        self.low, self.high, self.length, self.end = int(low), int(high), length, end

    def _load(self, t: float) -> tuple[int, float]:
        frac = min(t / self.length, 1.0)
        users = round(self.low + (self.high - self.low) * frac)
        # Twice the line's slope, so users track it within a tick; never slower than 1 user/s.
        rate = max(2 * abs(self.high - self.low) / self.length, 1.0)
        return users, rate


class DailySineShape(_PureShape):
    """A day's traffic compressed into `period` seconds: from the night-time `low` to the midday `high` and
    back, repeated until `end` (default: one period)."""

    def __init__(self, low: int = 4, high: int = 64, period: float = 120, end: float | None = None) -> None:
        super().__init__()
        end = period if end is None else end
        if low < 0 or high < low or period <= 0 or end <= 0:
            raise ValueError("sine needs 0 <= low <= high and period, end > 0")
        self.low, self.high, self.period, self.end = int(low), int(high), period, end

    def _load(self, t: float) -> tuple[int, float]:
        half = (self.high - self.low) / 2
        users = round(self.low + half * (1 - math.cos(2 * math.pi * t / self.period)))
        # The sine's steepest slope is pi*(high-low)/period users/s; spawn at twice that to keep up.
        rate = max(2 * math.pi * half * 2 / self.period, 1.0)
        return users, rate


SHAPES: Mapping[str, type[_PureShape]] = MappingProxyType({
    "step": StepShape,
    "spike": SpikeShape,
    "ramp": RampShape,
    "sine": DailySineShape,
    "daily": DailySineShape,
})  # read-only: a registry, not state


def parse_shape(spec: str, args: str = "") -> _PureShape:
    """`NAME` or `NAME:key=value,...`, e.g. `step:low=4,high=64,start=15,length=45,end=120`; `args` adds
    more key=value pairs (the --shape-args flag)."""
    name, _, params = spec.partition(":")
    params = ",".join(p for p in (params, args) if p)
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
