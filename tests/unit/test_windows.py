"""SlidingWindows: averages from cumulative counters, checked by hand."""

from dataclasses import astuple

import pytest

from policies.windows import SlidingWindows, WindowAverages


def feed(windows, samples):
    for now, inflight_s, requests in samples:
        windows.observe(now, inflight_s, requests)


def steady(concurrency, rps, seconds, start=0.0):
    """Counters for a constant load sampled each second."""
    return [(start + t, concurrency * t, rps * t) for t in range(seconds + 1)]


@pytest.mark.parametrize("name, samples, now, expected", [
    ("no data", [], 10.0, WindowAverages(None, None, None, None, 0.0)),
    ("one sample is not a window", [(0, 0, 0)], 10.0, WindowAverages(None, None, None, None, 0.0)),
    ("steady 20 in flight at 200 rps, full window",
     steady(20, 200, 100), 100.0, WindowAverages(20.0, 20.0, 200.0, 200.0, 60.0)),
    ("partial stable window reports its coverage",
     steady(5, 50, 10), 10.0, WindowAverages(5.0, 5.0, 50.0, 50.0, 10.0)),
    ("burst in the last 6 s shows in the panic window only",
     steady(10, 100, 54) + [(54 + t, 540 + 40 * t, 5400 + 400 * t) for t in range(1, 7)],
     60.0, WindowAverages((540 + 240) / 60, 40.0, (5400 + 2400) / 60, 400.0, 60.0)),
    ("a counter going backwards (restart) starts afresh",
     steady(10, 100, 30) + [(31, 2, 20), (32, 4, 40)], 32.0, WindowAverages(2.0, 2.0, 20.0, 20.0, 1.0)),
    ("samples after `now` are ignored", steady(10, 100, 20), 10.0, WindowAverages(10.0, 10.0, 100.0, 100.0, 10.0)),
])
def test_averages(name, samples, now, expected):
    windows = SlidingWindows(60, 6)
    feed(windows, samples)
    assert astuple(windows.averages(now)) == pytest.approx(astuple(expected))


def test_sparse_samples_are_interpolated_to_the_exact_window():
    # Samples 4 s apart: the 6 s window starts between two of them.
    windows = SlidingWindows(60, 6)
    feed(windows, [(t, 3.0 * t, 30.0 * t) for t in range(0, 101, 4)])
    a = windows.averages(100)
    assert a.panic_inflight == pytest.approx(3.0)
    assert a.panic_rps == pytest.approx(30.0)


def test_memory_stays_bounded_over_a_long_run():
    windows = SlidingWindows(60, 6)
    feed(windows, steady(1, 1, 10_000))
    assert len(windows._samples) <= 62
    assert windows.averages(10_000).stable_coverage_s == 60.0


def test_bad_window_lengths_are_refused():
    with pytest.raises(ValueError):
        SlidingWindows(0, 6)
