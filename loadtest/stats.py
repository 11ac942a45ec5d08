"""Request statistics kept cheap: counters and a rounded latency histogram (locust's rounding), no samples.

The CSV column names and order are locust's (locust/stats.py: StatsCSV and StatsCSVFileWriter), so tools built
for locust's files read these. The history file may carry extra columns; they always come after locust's.
"""

from __future__ import annotations

import csv
import re
import time
import traceback
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
                 "max_response_time", "total_content_length", "response_times", "fine_times", "start_time",
                 "last_request_timestamp", "num_reqs_per_sec", "num_fail_per_sec")

    def __init__(self, method: str, name: str) -> None:
        self.method = method
        self.name = name
        self.start_time = time.time()
        self.last_request_timestamp: float | None = None
        self.num_reqs_per_sec: dict[int, int] = {}
        self.num_fail_per_sec: dict[int, int] = {}
        # Sub-10 ms latencies in 50 us steps, for the plot only (the CSV keeps locust's whole milliseconds).
        self.fine_times: dict[int, int] = {}
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
        if response_time < 10:
            fine = self.fine_times
            k = int(response_time * 20)
            fine[k] = fine.get(k, 0) + 1
        now = time.time()
        self.last_request_timestamp = now
        sec = int(now)
        per = self.num_reqs_per_sec
        per[sec] = per.get(sec, 0) + 1

    def log_failure(self) -> None:
        self.num_failures += 1
        sec = int(time.time())
        self.num_fail_per_sec[sec] = self.num_fail_per_sec.get(sec, 0) + 1

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
        for k, v in other.fine_times.items():
            self.fine_times[k] = self.fine_times.get(k, 0) + v
        self.start_time = min(self.start_time, other.start_time)
        if other.last_request_timestamp is not None:
            self.last_request_timestamp = max(self.last_request_timestamp or 0.0, other.last_request_timestamp)
        for src, dst in ((other.num_reqs_per_sec, self.num_reqs_per_sec),
                         (other.num_fail_per_sec, self.num_fail_per_sec)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v

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

    # locust's StatsEntry names, for event hooks and quitting checks written against locust.
    def get_response_time_percentile(self, pct: float) -> int:
        return self.percentile(pct)

    @property
    def fail_ratio(self) -> float:
        return self.num_failures / self.num_requests if self.num_requests else 0.0

    @property
    def total_rps(self) -> float:
        if not self.last_request_timestamp:
            return 0.0
        return self.num_requests / max(self.last_request_timestamp - self.start_time, 1.0)

    @property
    def total_fail_per_sec(self) -> float:
        if not self.last_request_timestamp:
            return 0.0
        return self.num_failures / max(self.last_request_timestamp - self.start_time, 1.0)

    @property
    def current_rps(self) -> float:
        """Requests a second over the last ~10 s, as locust's."""
        now = int(time.time())
        return sum(self.num_reqs_per_sec.get(t, 0) for t in range(now - 11, now - 1)) / 10

    def serialize(self) -> dict[str, object]:
        """locust's StatsEntry.serialize(): what `--json` prints, key for key."""
        return {
            "name": self.name, "method": self.method, "last_request_timestamp": self.last_request_timestamp,
            "start_time": self.start_time, "num_requests": self.num_requests, "num_none_requests": 0,
            "num_failures": self.num_failures, "total_response_time": float(self.total_response_time),
            "max_response_time": float(self.max_response_time),
            "min_response_time": None if self.min_response_time is None else float(self.min_response_time),
            "total_content_length": self.total_content_length,
            "response_times": dict(self.response_times),
            "num_reqs_per_sec": dict(self.num_reqs_per_sec), "num_fail_per_sec": dict(self.num_fail_per_sec),
        }


class AggregatedEntry(StatsEntry):
    """`stats.total`: locust's attribute, and still callable as this project's `stats.total()` was."""

    __slots__ = ()

    def __call__(self) -> StatsEntry:
        return self


@dataclass
class Interval:
    """What happened between two snapshots: the basis of a history row and a progress line."""

    seconds: float
    requests: int
    failures: int
    response_times: dict[int, int]
    fine_times: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def fail_per_sec(self) -> float:
        return self.failures / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, pct: float) -> int:
        return percentile(self.response_times, self.requests, pct)

    def fine_percentile(self, pct: float) -> float:
        """The percentile in ms with 50 us resolution below 10 ms (for the plot: no 0/1 ms saw-teeth)."""
        coarse = self.percentile(pct)
        if coarse >= 10 or not self.fine_times:
            return float(coarse)
        return percentile(self.fine_times, sum(self.fine_times.values()), pct) / 20 + 0.025


@dataclass
class RequestStats:
    """All entries of one run, plus failures grouped like locust's failures.csv."""

    entries: dict[tuple[str, str], StatsEntry] = field(default_factory=dict)
    # (method, name, error) -> [occurrences, first seen, last seen] (epoch seconds)
    errors: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    # (message, traceback) -> count: exceptions raised by tasks, hooks, or the runner's own checks
    exceptions: dict[tuple[str, str], int] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)

    def log_request(self, method: str, name: str, response_time: float, content_length: int) -> None:
        entry = self.entries.get((name, method))
        if entry is None:
            entry = self.entries[(name, method)] = StatsEntry(method, name)
        entry.log(response_time, content_length)

    def log_error(self, method: str, name: str, error: BaseException | str | None) -> None:
        entry = self.entries.get((name, method))
        if entry is None:
            entry = self.entries[(name, method)] = StatsEntry(method, name)
        entry.log_failure()
        key = (method, name, error_text(error))
        now = time.time()
        seen = self.errors.get(key)
        if seen is None:
            self.errors[key] = [1, now, now]
        else:
            seen[0] += 1
            seen[2] = now

    def log_exception(self, exc: BaseException | str, tb: str = "") -> bool:
        """An exception a task raised (not a request failure): counted apart, as locust's exceptions, by
        message and traceback. True the first time this one is seen (the caller prints it then)."""
        if isinstance(exc, BaseException):
            # locust's exceptions.csv Message is str(exception); an empty one gets the type's name instead.
            msg = str(exc) or repr(exc)
            if not tb and exc.__traceback__ is not None:
                tb = "".join(traceback.format_tb(exc.__traceback__))
        else:
            msg = exc
        key = (msg, tb)
        n = self.exceptions.get(key, 0)
        self.exceptions[key] = n + 1
        return n == 0

    def aggregated(self) -> StatsEntry:
        agg = AggregatedEntry("", "Aggregated")
        agg.start_time = self.start_time
        for entry in self.entries.values():
            agg.extend(entry)
        agg.start_time = self.start_time
        return agg

    @property
    def total(self) -> StatsEntry:
        """locust's `environment.stats.total`: every request aggregated."""
        return self.aggregated()

    def get(self, name: str, method: str) -> StatsEntry:
        entry = self.entries.get((name, method))
        if entry is None:
            entry = self.entries[(name, method)] = StatsEntry(method, name)
        return entry

    def serialize_stats(self) -> list[dict[str, object]]:
        return [e.serialize() for e in self.entries.values() if e.num_requests or e.num_failures]

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
        return Interval(seconds, cur.num_requests, cur.num_failures, dict(cur.response_times),
                        dict(cur.fine_times))

    def diff(new: dict[int, int], old: dict[int, int]) -> dict[int, int]:
        out = {}
        for k, v in new.items():
            d = v - old.get(k, 0)
            if d:
                out[k] = d
        return out

    return Interval(seconds, cur.num_requests - prev.num_requests, cur.num_failures - prev.num_failures,
                    diff(cur.response_times, prev.response_times), diff(cur.fine_times, prev.fine_times))


def _percentile_fields(entry: StatsEntry) -> list[object]:
    if not entry.num_requests:
        return ["N/A"] * len(PERCENTILES_TO_REPORT)
    return [entry.percentile(p) for p in PERCENTILES_TO_REPORT]


def stats_rows(stats: RequestStats, duration: float) -> list[list[object]]:
    """Rows of PREFIX_stats.csv: one per (method, name) sorted as locust does, then Aggregated."""
    duration = max(duration, 1e-9)
    rows = []
    ordered = [stats.entries[k] for k in sorted(stats.entries)]
    for entry in [*ordered, stats.aggregated()]:
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
    return [[n, msg, tb, "local"] for (msg, tb), n in sorted(stats.exceptions.items(), key=lambda kv: -kv[1])]


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
