"""Stable and panic window averages from cumulative counters.

The balancer (and the simulator) samples two counters about once a second: the time integral of
total in-flight requests (`inflight_seconds_total`) and completed requests (`requests_total`). The
average concurrency over a window is the integral's increase divided by the window's length, and
the request rate is the counter's increase divided by it. Differencing counters, rather than
keeping every observation, makes the averages exact whatever the sampling rate and cheap to keep.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowAverages:
    """The window fields of a Snapshot, named alike: `Snapshot(..., **vars(averages))`."""

    stable_inflight: float | None   # average total in-flight requests over the stable window
    panic_inflight: float | None    # ... over the panic window
    stable_rps: float | None        # completed requests per second over the stable window
    panic_rps: float | None         # ... over the panic window
    stable_coverage_s: float        # seconds of data the stable window really holds (<= stable_s)


class SlidingWindows:
    """Averages over the last `stable_s` and `panic_s` seconds of cumulative counters."""

    def __init__(self, stable_s: float, panic_s: float) -> None:
        if not stable_s > 0 or not panic_s > 0:
            raise ValueError("window lengths must be positive")
        self.stable_s = float(stable_s)
        self.panic_s = float(panic_s)
        self._samples: deque[tuple[float, float, float]] = deque()

    def observe(self, now: float, inflight_seconds_total: float, requests_total: float) -> None:
        """Record the counters as of `now`. A counter that went backwards (a restart) starts afresh."""
        if self._samples:
            last_t, last_i, last_r = self._samples[-1]
            if now <= last_t:
                return  # a repeated or out-of-order sample adds nothing
            if inflight_seconds_total < last_i or requests_total < last_r:
                self._samples.clear()
        self._samples.append((float(now), float(inflight_seconds_total), float(requests_total)))
        # Keep one sample at or before the stable window's start so it can be interpolated.
        horizon = now - max(self.stable_s, self.panic_s)
        while len(self._samples) >= 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    def averages(self, now: float) -> WindowAverages:
        """Averages for windows ending at the latest sample at or before `now`."""
        samples = [s for s in self._samples if s[0] <= now]
        if len(samples) < 2:
            return WindowAverages(None, None, None, None, 0.0)
        end = samples[-1]
        stable = self._over(samples, end, self.stable_s)
        panic = self._over(samples, end, self.panic_s)
        coverage = min(self.stable_s, end[0] - samples[0][0])
        return WindowAverages(stable[0], panic[0], stable[1], panic[1], coverage)

    @staticmethod
    def _over(samples: list[tuple[float, float, float]], end: tuple[float, float, float],
              length: float) -> tuple[float, float]:
        """(average in-flight, rate) from `length` seconds before `end` (or the first sample) to `end`."""
        start_t = max(end[0] - length, samples[0][0])
        # Interpolate the counters at start_t between the two samples around it, so the window is
        # exactly its length even when samples are a second or more apart.
        before = samples[0]
        for sample in samples:
            if sample[0] <= start_t:
                before = sample
            else:
                after = sample
                break
        else:
            after = end
        if after[0] > before[0]:
            f = (start_t - before[0]) / (after[0] - before[0])
            inflight0 = before[1] + f * (after[1] - before[1])
            requests0 = before[2] + f * (after[2] - before[2])
        else:
            inflight0, requests0 = before[1], before[2]
        dt = end[0] - start_t
        return (end[1] - inflight0) / dt, (end[2] - requests0) / dt
