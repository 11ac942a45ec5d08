"""Request statistics kept cheap: counters and a rounded latency histogram (locust's rounding), no samples.

The CSV column names and order are locust's (locust/stats.py: StatsCSV and StatsCSVFileWriter), so tools built
for locust's files read these. The history file may carry extra columns; they always come after locust's.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

PERCENTILES_TO_REPORT = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)


def readable_percentiles(percentiles: Iterable[float]) -> list[str]:
    out = []
    for p in percentiles:
        pct = p * 100
        out.append(f"{int(pct)}%" if pct.is_integer() else f"{round(pct, 6)}%")
    return out


STATS_CSV_COLUMNS = (
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
    *readable_percentiles(PERCENTILES_TO_REPORT),
)
HISTORY_CSV_COLUMNS = (
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
    *readable_percentiles(PERCENTILES_TO_REPORT),
    "Total Request Count", "Total Failure Count", "Total Median Response Time", "Total Average Response Time",
    "Total Min Response Time", "Total Max Response Time", "Total Average Content Size",
)
FAILURES_CSV_COLUMNS = ("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")
EXCEPTIONS_CSV_COLUMNS = ("Count", "Message", "Traceback", "Nodes")


def round_response_time(ms: float) -> int:
    """locust's bucketing: 1 ms steps below 100, then two significant digits (147 -> 150, 3432 -> 3400)."""
    if ms < 100:
        return int(round(ms))
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def percentile(hist: dict[int, int], count: int, pct: float) -> int:
    """The response time that `pct` of `count` requests finished within (locust's method, on the buckets)."""
    if count <= 0:
        return 0
    target = int(count * pct)
    seen = 0
    for rt in sorted(hist, reverse=True):
        seen += hist[rt]
        if count - seen <= target:
            return rt
    return 0


def median(hist: dict[int, int], count: int) -> int:
    if count <= 0:
        return 0
    pos = (count - 1) / 2
    key = 0
    for key in sorted(hist):
        if pos < hist[key]:
            return key
        pos -= hist[key]
    return key


class StatsEntry:
    """One (method, name) row: counters and a {rounded ms: count} histogram."""

    __slots__ = ("method", "name", "num_requests", "num_failures", "total_response_time", "min_response_time",
                 "max_response_time", "total_content_length", "response_times")

    def __init__(self, method: str, name: str) -> None:
        self.method = method
        self.name = name
        self.num_requests = 0
        self.num_failures = 0
        self.total_response_time = 0.0
        self.min_response_time: float | None = None
        self.max_response_time = 0.0
        self.total_content_length = 0
        self.response_times: dict[int, int] = {}

    def log(self, response_time: float, content_length: int) -> None:
        self.num_requests += 1
        self.total_response_time += response_time
        if self.min_response_time is None or response_time < self.min_response_time:
            self.min_response_time = response_time
        if response_time > self.max_response_time:
            self.max_response_time = response_time
        self.total_content_length += content_length
        # round_response_time's first branch inlined: most requests take under 100 ms.
        key = round(response_time) if response_time < 100 else round_response_time(response_time)
        hist = self.response_times
        hist[key] = hist.get(key, 0) + 1

    def extend(self, other: StatsEntry) -> None:
        self.num_requests += other.num_requests
        self.num_failures += other.num_failures
        self.total_response_time += other.total_response_time
        if other.min_response_time is not None and (
                self.min_response_time is None or other.min_response_time < self.min_response_time):
            self.min_response_time = other.min_response_time
        self.max_response_time = max(self.max_response_time, other.max_response_time)
        self.total_content_length += other.total_content_length
        for k, v in other.response_times.items():
            self.response_times[k] = self.response_times.get(k, 0) + v

    @property
    def avg_response_time(self) -> float:
        return self.total_response_time / self.num_requests if self.num_requests else 0.0

    @property
    def avg_content_length(self) -> float:
        return self.total_content_length / self.num_requests if self.num_requests else 0.0

    @property
    def median_response_time(self) -> int:
        m = median(self.response_times, self.num_requests)
        # Buckets have two digits of precision; never report a median outside the exact min and max.
        if self.num_requests:
            m = min(max(m, int(self.min_response_time or 0)), int(self.max_response_time))
        return m

    def percentile(self, pct: float) -> int:
        return percentile(self.response_times, self.num_requests, pct)


@dataclass
class Interval:
    """What happened between two snapshots: the basis of a history row and a progress line."""

    seconds: float
    requests: int
    failures: int
    response_times: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def fail_per_sec(self) -> float:
        return self.failures / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, pct: float) -> int:
        return percentile(self.response_times, self.requests, pct)


@dataclass
class RequestStats:
    """All entries of one run, plus failures grouped like locust's failures.csv."""

    entries: dict[tuple[str, str], StatsEntry] = field(default_factory=dict)
    # (method, name, error) -> [occurrences, first seen, last seen] (epoch seconds)
    errors: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)

    def log_request(self, method: str, name: str, response_time: float, content_length: int) -> None:
        entry = self.entries.get((name, method))
        if entry is None:
            entry = self.entries[(name, method)] = StatsEntry(method, name)
        entry.log(response_time, content_length)

    def log_error(self, method: str, name: str, error: BaseException | str | None) -> None:
        entry = self.entries.get((name, method))
        if entry is None:
            entry = self.entries[(name, method)] = StatsEntry(method, name)
        entry.num_failures += 1
        key = (method, name, error_text(error))
        now = time.time()
        seen = self.errors.get(key)
        if seen is None:
            self.errors[key] = [1, now, now]
        else:
            seen[0] += 1
            seen[2] = now

    def log_exception(self, exc: BaseException) -> None:
        """An exception a task raised (not a request failure): counted apart, as locust's exceptions."""
        key = error_text(exc)
        self.exceptions[key] = self.exceptions.get(key, 0) + 1

    def total(self) -> StatsEntry:
        agg = StatsEntry("", "Aggregated")
        for entry in self.entries.values():
            agg.extend(entry)
        return agg

    @property
    def num_requests(self) -> int:
        return sum(e.num_requests for e in self.entries.values())

    @property
    def num_failures(self) -> int:
        return sum(e.num_failures for e in self.entries.values())


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def error_text(error: BaseException | str | None) -> str:
    """locust's StatsError.parse_error: repr of the exception, object addresses removed so errors group."""
    if error is None:
        return "None"
    text = error if isinstance(error, str) else repr(error)
    return _ADDRESS.sub("", text)


def interval_between(prev: StatsEntry | None, cur: StatsEntry, seconds: float) -> Interval:
    if prev is None:
        return Interval(seconds, cur.num_requests, cur.num_failures, dict(cur.response_times))
    hist = {}
    old = prev.response_times
    for k, v in cur.response_times.items():
        d = v - old.get(k, 0)
        if d:
            hist[k] = d
    return Interval(seconds, cur.num_requests - prev.num_requests, cur.num_failures - prev.num_failures, hist)


def _percentile_fields(entry: StatsEntry) -> list[object]:
    if not entry.num_requests:
        return ["N/A"] * len(PERCENTILES_TO_REPORT)
    return [entry.percentile(p) for p in PERCENTILES_TO_REPORT]


def stats_rows(stats: RequestStats, duration: float) -> list[list[object]]:
    """Rows of PREFIX_stats.csv: one per (method, name) sorted as locust does, then Aggregated."""
    duration = max(duration, 1e-9)
    rows = []
    ordered = [stats.entries[k] for k in sorted(stats.entries)]
    for entry in [*ordered, stats.total()]:
        rows.append([
            entry.method, entry.name, entry.num_requests, entry.num_failures, entry.median_response_time,
            entry.avg_response_time, entry.min_response_time or 0, entry.max_response_time,
            entry.avg_content_length, entry.num_requests / duration, entry.num_failures / duration,
            *_percentile_fields(entry),
        ])
    return rows


def history_row(timestamp: float, users: int, interval: Interval, total: StatsEntry) -> list[object]:
    """One PREFIX_stats_history.csv row. Rate and percentiles are over the last interval (about a second),
    so the file shows how latency moved; the Total columns are cumulative, as in locust."""
    if total.num_requests:
        pcts: list[object] = [interval.percentile(p) for p in PERCENTILES_TO_REPORT]
    else:
        pcts = ["N/A"] * len(PERCENTILES_TO_REPORT)
    return [
        int(timestamp), users, "", "Aggregated", f"{interval.rps:2f}", f"{interval.fail_per_sec:2f}", *pcts,
        total.num_requests, total.num_failures, total.median_response_time, total.avg_response_time,
        total.min_response_time or 0, total.max_response_time, total.avg_content_length,
    ]


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failures_rows(stats: RequestStats) -> list[list[object]]:
    return [[method, name, err, int(n), _utc(first), _utc(last)]
            for (method, name, err), (n, first, last) in sorted(stats.errors.items())]


def exceptions_rows(stats: RequestStats) -> list[list[object]]:
    return [[n, msg, "", "local"] for msg, n in sorted(stats.exceptions.items(), key=lambda kv: -kv[1])]


def write_csv(path: str, columns: Sequence[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


class HistoryWriter:
    """Appends one row a second and flushes, so a crashed or interrupted run still leaves its history."""

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self._fh: IO[str] = open(path, "w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(columns)
        self._fh.flush()

    def write(self, row: list[object]) -> None:
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
