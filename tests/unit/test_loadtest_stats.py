"""Latency buckets, percentiles and the locust CSV layout."""

from __future__ import annotations

import pytest

from loadtest.stats import (
    HISTORY_CSV_COLUMNS,
    STATS_CSV_COLUMNS,
    RequestStats,
    StatsEntry,
    error_text,
    interval_between,
    percentile,
    round_response_time,
    stats_rows,
)


@pytest.mark.parametrize("ms, bucket", [
    (0.2, 0), (0.6, 1), (47.4, 47), (99.4, 99), (147, 150), (144, 140), (999, 1000), (3432, 3400),
    (58760, 59000),
])
def test_buckets_round_like_locust(ms: float, bucket: int) -> None:
    assert round_response_time(ms) == bucket
    entry = StatsEntry("GET", "/")
    entry.log(ms, 0)
    assert entry.response_times == {bucket: 1}


def test_percentiles_on_buckets() -> None:
    entry = StatsEntry("GET", "/")
    for ms in range(1, 101):  # 1..100 ms, one each
        entry.log(float(ms), 10)
    # locust's rule: the smallest time that at most (1 - pct) of requests exceeded, counted from the top.
    assert entry.percentile(0.5) == 51
    assert entry.percentile(0.95) == 96
    assert entry.percentile(1.0) == 100
    assert entry.median_response_time == 50
    assert entry.avg_response_time == pytest.approx(50.5)
    assert entry.avg_content_length == 10
    assert percentile({}, 0, 0.5) == 0


def test_median_never_leaves_min_max() -> None:
    entry = StatsEntry("GET", "/")
    entry.log(0.3, 0)  # bucket 0, but the exact minimum is 0.3
    assert entry.median_response_time == 0


def test_failures_count_as_requests_and_group_by_error() -> None:
    stats = RequestStats()
    for _ in range(3):
        stats.log_request("GET", "/x", 1.0, 0)
        stats.log_error("GET", "/x", ConnectionRefusedError(111, "Connect call failed"))
    stats.log_request("GET", "/x", 1.0, 0)
    assert stats.num_requests == 4 and stats.num_failures == 3
    [(key, (count, first, last))] = stats.errors.items()
    assert key == ("GET", "/x", "ConnectionRefusedError(111, 'Connect call failed')")
    assert count == 3 and first <= last


def test_error_text_drops_addresses() -> None:
    assert error_text("<Foo object at 0x7f00ab> broke") == "<Foo object> broke"


def test_interval_is_the_difference_of_two_snapshots() -> None:
    stats = RequestStats()
    stats.log_request("GET", "/", 5, 0)
    first = stats.aggregated()
    for ms in (10, 10, 20):
        stats.log_request("GET", "/", ms, 0)
    stats.log_error("GET", "/", "bad")
    iv = interval_between(first, stats.aggregated(), 2.0)
    assert (iv.requests, iv.failures, iv.rps, iv.fail_per_sec) == (3, 1, 1.5, 0.5)
    assert iv.response_times == {10: 2, 20: 1}
    assert iv.percentile(0.95) == 20


def test_stats_rows_follow_the_columns_and_end_with_aggregated() -> None:
    stats = RequestStats()
    stats.log_request("POST", "/b", 2, 4)
    stats.log_request("GET", "/a", 4, 2)
    rows = stats_rows(stats, duration=2.0)
    assert all(len(r) == len(STATS_CSV_COLUMNS) for r in rows)
    assert [(r[0], r[1], r[2]) for r in rows] == [("GET", "/a", 1), ("POST", "/b", 1), ("", "Aggregated", 2)]
    assert rows[-1][STATS_CSV_COLUMNS.index("Requests/s")] == 1.0
    assert len(HISTORY_CSV_COLUMNS) == 24


def test_empty_entry_reports_na_percentiles() -> None:
    rows = stats_rows(RequestStats(), duration=1.0)
    assert rows == [["", "Aggregated", 0, 0, 0, 0.0, 0, 0.0, 0.0, 0.0, 0.0] + ["N/A"] * 11]
