"""Bundled shapes as pure functions of run time, and the --shape parser."""

from __future__ import annotations

import pytest

from loadtest.shapes import DailySineShape, RampShape, SpikeShape, StepShape, parse_shape


@pytest.mark.parametrize("t, expected", [
    (0, (4, 100)), (14.9, (4, 100)), (15, (64, 100)), (59.9, (64, 100)), (60, (4, 100)), (119.9, (4, 100)),
    (120, None),
])
def test_step(t: float, expected: tuple[int, float] | None) -> None:
    assert StepShape(low=4, high=64, start=15, length=45, end=120).at(t) == expected


def test_step_default_end_leaves_a_minute_to_scale_down() -> None:
    shape = StepShape(low=1, high=10, start=5, length=10)
    assert shape.total == 75
    assert shape.at(74) == (1, 100) and shape.at(75) is None


@pytest.mark.parametrize("t, users", [(0, 2), (9.9, 2), (10, 50), (14.9, 50), (15, 2)])
def test_spike_spawns_the_whole_burst_within_a_tick(t: float, users: int) -> None:
    shape = SpikeShape(low=2, high=50, start=10, length=5, end=30)
    assert shape.at(t) == (users, 50.0)


@pytest.mark.parametrize("t, users", [(0, 10), (15, 20), (30, 30), (45, 40), (59, 49), (60, 50), (99, 50)])
def test_ramp(t: float, users: int) -> None:
    assert RampShape(low=10, high=50, length=60, end=100).at(t) == (users, 80 / 60)


def test_ramp_holds_then_stops() -> None:
    shape = RampShape(low=0, high=20, length=10, end=15)
    assert shape.at(12) == (20, 4.0)
    assert shape.at(15) is None


@pytest.mark.parametrize("t, users", [(0, 4), (30, 34), (60, 64), (90, 34), (119, 4)])
def test_daily_sine_goes_from_night_low_to_midday_high(t: float, users: int) -> None:
    shape = DailySineShape(low=4, high=64, period=120)
    got = shape.at(t)
    assert got is not None and got[0] == users
    assert shape.at(120) is None


def test_every_shape_stops_by_itself() -> None:
    for shape in (StepShape(), SpikeShape(), RampShape(), DailySineShape()):
        assert shape.at(shape.total) is None
        assert shape.at(shape.total - 0.5) is not None


def test_tick_uses_run_time() -> None:
    shape = StepShape(low=1, high=2, start=1000, length=1)
    shape.reset_time()
    assert shape.tick() == (1, 100)


@pytest.mark.parametrize("spec, args, expected", [
    ("step", "", StepShape()),
    ("step:low=1,high=9", "", StepShape(low=1, high=9)),
    ("step", "low=4,high=64,start=15,length=45,end=120", StepShape(4, 64, 15, 45, 120)),
    ("ramp:high=10,length=2.5", "", RampShape(high=10, length=2.5)),
    ("sine", "period=60", DailySineShape(period=60)),
    ("spike", "high=7", SpikeShape(high=7)),
])
def test_parse_shape(spec: str, args: str, expected: object) -> None:
    assert repr(parse_shape(spec, args)) == repr(expected)


@pytest.mark.parametrize("spec", ["nope", "step:low", "step:bogus=1", "step:length=0", "sine:low=5,high=1"])
def test_parse_shape_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_shape(spec)
