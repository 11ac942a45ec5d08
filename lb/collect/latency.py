"""A rolling latency histogram: log-spaced buckets, one row per second, kept for a bounded time.

Recording is one log() and two list increments, so the proxy can call it per request. Quantiles
over "the last N seconds" add up the rows of those seconds (what the control loop asks for), and
a lifetime histogram in Prometheus buckets is kept beside it for /metrics.
"""

from __future__ import annotations

import math
from bisect import bisect_left

_MIN_MS = 0.05          # bucket 0 holds everything faster than this
_GROWTH = 1.08          # each bucket is 8% wider than the one before: quantiles within ~4%
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = 200          # 0.05 ms * 1.08**200 ~ 250 s: the top bucket holds anything slower
# Constants and functions bound once, so record() does no global or attribute lookups for them.
_TOP = _BUCKETS - 1
_PER_MIN_S = 1.0 / (_MIN_MS / 1000.0)
_PER_LOG_GROWTH = 1.0 / _LOG_GROWTH
_MIN_S = _MIN_MS / 1000.0
_log = math.log

# Prometheus buckets (seconds) for lb_request_duration_seconds.
PROM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _upper_ms(index: int) -> float:
    return _MIN_MS * _GROWTH ** index


class RollingHistogram:
    def __init__(self, keep_s: int = 900) -> None:
        self.keep_s = keep_s
        self._rows: dict[int, list[int]] = {}   # whole second -> counts per bucket
        self._oldest = 0
        self._second = -1                        # the row being filled, kept at hand
        self._row: list[int] = []
        # Lifetime, in Prometheus buckets (non-cumulative; +Inf last), and the sum in seconds.
        self.prom_counts = [0] * (len(PROM_BUCKETS) + 1)
        self.prom_sum = 0.0

    def record(self, now: float, seconds: float) -> None:
        second = int(now)
        if second == self._second:
            row = self._row
        else:
            found = self._rows.get(second)
            if found is None:
                row = self._rows[second] = [0] * _BUCKETS
                self._expire(second)
            else:
                row = found
            self._second, self._row = second, row
        # Bucket i > 0 runs from _MIN_S * _GROWTH**(i-1) up to _MIN_S * _GROWTH**i; the top one, to infinity.
        if seconds <= _MIN_S:
            row[0] += 1
        else:
            index = int(_log(seconds * _PER_MIN_S) * _PER_LOG_GROWTH) + 1
            row[index if index < _BUCKETS else _TOP] += 1
        self.prom_counts[bisect_left(PROM_BUCKETS, seconds)] += 1
        self.prom_sum += seconds

    def _expire(self, second: int) -> None:
        cutoff = second - self.keep_s
        if self._oldest < cutoff:
            for old in [s for s in self._rows if s < cutoff]:
                del self._rows[old]
            self._oldest = cutoff

    def quantiles(self, now: float, window_s: float, qs: tuple[float, ...] | list[float]) -> list[float | None]:
        """Quantiles in milliseconds over the seconds (now - window_s, now]; None when empty."""
        first = now - window_s
        totals = [0] * _BUCKETS
        count = 0
        for second, row in self._rows.items():
            if first < second + 1 and second <= now:
                for i, n in enumerate(row):
                    if n:
                        totals[i] += n
                        count += n
        if count == 0:
            return [None for _ in qs]
        out: list[float | None] = []
        for q in qs:
            rank = max(1, math.ceil(q * count))
            seen = 0
            for i, n in enumerate(totals):
                seen += n
                if seen >= rank:
                    # The bucket's geometric middle: within half a bucket of the truth.
                    out.append(_upper_ms(i) / math.sqrt(_GROWTH) if i else _MIN_MS)
                    break
        return out

    def prom_cumulative(self) -> list[tuple[str, int]]:
        """[(le, cumulative count), ...] ending with +Inf, as HistogramMetricFamily wants."""
        out, total = [], 0
        for le, n in zip([*map(str, PROM_BUCKETS), "+Inf"], self.prom_counts):
            total += n
            out.append((le, total))
        return out
