"""rps, latency, step and hpa, table-driven: a run of snapshots and the replicas wanted after each."""

import pytest

from policies import Snapshot, make

SETTINGS = {"target_inflight": 10, "target_rps": 50, "target_p95_ms": 250, "stable_window": 60,
            "panic_window": 6, "scale_interval": 2, "max_scale_up_rate": 1000, "max_scale_down_rate": 2}


def snap(now, replicas, inflight=None, panic=None, rps=None, panic_rps=None, p95=None, ready=None,
         coverage=60.0):
    return Snapshot(now=now, replicas=replicas, ready_replicas=replicas if ready is None else ready,
                    stable_inflight=inflight, panic_inflight=inflight if panic is None else panic,
                    stable_rps=rps, panic_rps=rps if panic_rps is None else panic_rps,
                    p95_ms=p95, stable_coverage_s=coverage)


def run(name, snapshots, settings=SETTINGS):
    policy = make(name, settings)
    state = policy.initial_state()
    wanted = []
    for s in snapshots:
        decision, state = policy.decide(s, state)
        assert decision.reason and str(decision.replicas) in decision.reason
        wanted.append(decision.replicas)
    return wanted


def every(seconds, start=100.0):
    return [start + i * seconds for i in range(100)]


CASES = [
    # --- rps: the concurrency decider on requests per second -------------------------------
    ("rps", "steady", [snap(100, 4, rps=200.0)], [4]),
    ("rps", "step up", [snap(100, 2, rps=130.0, panic_rps=120.0)], [3]),
    ("rps", "burst panics", [snap(100, 2, rps=110.0, panic_rps=300.0)], [6]),
    ("rps", "step down (rate limited)", [snap(100, 8, rps=50.0)], [4]),
    ("rps", "flapping burst holds", [snap(100 + 2 * i, 2 if i == 0 else 6, rps=100.0,
                                          panic_rps=300.0 if i % 2 == 0 else 20.0) for i in range(4)], [6, 6, 6, 6]),
    ("rps", "missing data holds", [snap(100, 3)], [3]),
    ("rps", "restart: no scale-down on a short window", [snap(10, 8, rps=50.0, coverage=10.0)], [8]),
    # --- latency ----------------------------------------------------------------------------
    ("latency", "steady under target holds", [snap(100, 4, p95=200.0)], [4]),
    ("latency", "step up in proportion", [snap(100, 4, p95=500.0)], [8]),
    ("latency", "just above target adds at least one", [snap(100, 4, p95=251.0)], [5]),
    ("latency", "waits for starting replicas", [snap(100, 8, p95=500.0, ready=4)], [8]),
    ("latency", "step down one at a time, a stable window apart",
     [snap(t, n, p95=100.0) for t, n in ((100, 4), (102, 3), (170, 3))], [3, 3, 2]),
    ("latency", "flapping around target: up once, then cools down",
     [snap(100 + 2 * i, 4 if i == 0 else 5, p95=300.0 if i % 2 == 0 else 150.0) for i in range(4)],
     [5, 5, 5, 5]),
    ("latency", "missing data holds", [snap(100, 3)], [3]),
    ("latency", "restart: no scale-down on a short window", [snap(10, 4, p95=100.0, coverage=10.0)], [4]),
    # --- step -------------------------------------------------------------------------------
    ("step", "steady in band holds", [snap(100, 4, inflight=20.0)], [4]),
    ("step", "step up by one, then cools down", [snap(100, 2, inflight=100.0), snap(102, 3, inflight=100.0),
                                                 snap(131, 3, inflight=100.0)], [3, 3, 4]),
    ("step", "step down by one", [snap(100, 4, inflight=5.0)], [3]),
    ("step", "flapping within the cooldown does not flap",
     [snap(100 + 2 * i, 4 if i == 0 else 5, inflight=50.0 if i % 2 == 0 else 2.0) for i in range(4)],
     [5, 5, 5, 5]),
    ("step", "missing data holds", [snap(100, 3)], [3]),
    ("step", "restart: no scale-down on a short window", [snap(10, 4, inflight=1.0, coverage=10.0)], [4]),
    # --- hpa --------------------------------------------------------------------------------
    ("hpa", "steady within tolerance holds", [snap(100, 4, inflight=43.0)], [4]),
    ("hpa", "step up by the ratio", [snap(100, 4, inflight=60.0)], [6]),
    ("hpa", "step up limited to +4 or +100% per period", [snap(100, 2, inflight=200.0)], [6]),
    ("hpa", "syncs only every 15 s", [snap(100, 4, inflight=60.0), snap(110, 6, inflight=120.0),
                                      snap(115, 6, inflight=120.0)], [6, 6, 12]),
    ("hpa", "scale-down waits out the 300 s stabilisation",
     [snap(t, 6, inflight=60.0 if t == 100 else 20.0) for t in (100, 115, 390, 405)], [6, 6, 6, 2]),
    ("hpa", "flapping load keeps the highest recent count",
     [snap(100 + 15 * i, 8 if i else 4, inflight=80.0 if i % 2 == 0 else 20.0) for i in range(4)],
     [8, 8, 8, 8]),
    ("hpa", "missing data holds", [snap(100, 3)], [3]),
    ("hpa", "restart: a fresh state syncs at once", [snap(5, 2, inflight=40.0, coverage=4.0)], [4]),
]


@pytest.mark.parametrize("name, case, snapshots, wanted", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_policy(name, case, snapshots, wanted):
    assert run(name, snapshots) == wanted


@pytest.mark.parametrize("name, settings, snapshots, wanted", [
    ("step", {"step_size": 3}, [snap(100, 2, inflight=100.0)], [5]),
    ("step", {"step_cooldown_s": 5}, [snap(100, 2, inflight=100.0), snap(106, 3, inflight=100.0)], [3, 4]),
    ("hpa", {"hpa_tolerance": 0.5}, [snap(100, 4, inflight=55.0)], [4]),
    ("latency", {"target_p95_ms": 100}, [snap(100, 2, p95=300.0)], [6]),
])
def test_extra_settings_are_read_with_defaults(name, settings, snapshots, wanted):
    assert run(name, snapshots, {**SETTINGS, **settings}) == wanted
