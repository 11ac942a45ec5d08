"""The simulator's model against answers known by hand, its command line, and the issue's bars."""

import json

import pytest

from policies import Decision
from policies.simulate import Model, main, needed, simulate
from policies.traces import Trace, bundled, from_csv

SETTINGS = {"target_inflight": 10, "target_rps": 50, "target_p95_ms": 250, "stable_window": 60,
            "panic_window": 6, "scale_interval": 2, "max_scale_up_rate": 1000, "max_scale_down_rate": 2}


def flat(rps, seconds=60.0):
    return Trace("flat", seconds, lambda t: rps)


class Fixed:
    """A policy that wants `n` replicas from `at` seconds on."""

    name = "fixed"

    def __init__(self, n, at=0.0):
        self.n, self.at = n, at

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        n = self.n if snapshot.now >= self.at else snapshot.replicas
        return Decision(n, f"fixed {n}"), state


@pytest.mark.parametrize("rps, replicas, inflight", [
    (200.0, 2, 20.0),   # Little's law: 200/s x 0.1 s
    (50.0, 1, 5.0),
    (1000.0, 10, 100.0),
])
def test_steady_load_obeys_littles_law(rps, replicas, inflight):
    r = simulate(flat(rps), Fixed(replicas), Model(initial_replicas=replicas), SETTINGS)
    assert r.mean_inflight == pytest.approx(inflight, rel=1e-6)
    assert r.mean_latency_ms == pytest.approx(100.0)
    assert r.slo_violation_pct == 0.0
    assert r.replica_seconds == pytest.approx(replicas * 60.0)
    assert r.requests == pytest.approx(rps * 60.0)
    assert r.scale_events == 0


def test_twice_the_capacity_makes_nearly_everyone_late():
    # One replica serves 100/s; at 200/s the request arriving at a seconds starts at 2a, waiting a:
    # only those of the first 0.2 s (3 ticks of 100) are on time.
    model = Model(initial_replicas=1, max_replicas=1)
    r = simulate(flat(200.0, 10.0), Fixed(1), model, SETTINGS)
    assert r.slo_violation_pct == pytest.approx(97.0, abs=0.5)
    assert r.mean_inflight > 200  # the queue grows by 100 a second


def test_a_new_replica_serves_only_after_the_cold_start():
    r = simulate(flat(100.0, 20.0), Fixed(5, at=2.0), Model(initial_replicas=1), SETTINGS)
    ready = {t: rd for t, _, _, rd in r.series}
    wanted = {t: n for t, _, n, _ in r.series}
    assert wanted[3.0] == 5 and ready[6.0] == 1 and ready[7.0] == 5
    assert r.scale_events == 1


@pytest.mark.parametrize("wanted, replicas", [(100, 20), (0, 1), (-3, 1)])
def test_decisions_are_clamped_to_min_and_max(wanted, replicas):
    r = simulate(flat(100.0, 10.0), Fixed(wanted), Model(initial_replicas=1), SETTINGS)
    assert r.series[-1][2] == replicas


def test_the_oracle_is_never_late_and_has_capacity_at_the_step():
    r = simulate(bundled()["step"], "oracle", Model(), SETTINGS)
    assert r.slo_violation_pct == 0.0
    assert r.time_to_capacity_s == 0.0
    assert max(n for _, _, n, _ in r.series) == 10


@pytest.mark.parametrize("rate, replicas", [(0.0, 1), (100.0, 1), (100.1, 2), (1000.0, 10), (550.0, 6)])
def test_needed_replicas(rate, replicas):
    assert needed(rate, Model(), 10.0) == replicas


@pytest.mark.parametrize("t, rate", [(0, 100), (119.9, 100), (120, 1000), (599, 1000)])
def test_the_step_trace(t, rate):
    assert bundled()["step"].rate(t) == rate


@pytest.mark.parametrize("name, t, rate", [
    ("spike", 199, 100), ("spike", 200, 1000), ("spike", 230, 100),
    ("ramp", 0, 0), ("ramp", 300, 500), ("sine", 0, 550), ("sine", 75, 1000), ("sine", 225, 100),
    ("sawtooth", 0, 100), ("sawtooth", 30, 550), ("sawtooth", 60, 100),
])
def test_bundled_traces(name, t, rate):
    assert bundled()[name].rate(t) == pytest.approx(rate)


def test_a_csv_trace_is_interpolated(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("time_s,rps\n0,100\n10,300\n20,300\n")
    trace = from_csv(str(path))
    assert (trace.name, trace.duration_s) == ("mine", 20.0)
    assert [trace.rate(t) for t in (0, 5, 15, 30)] == [100, 200, 300, 300]


@pytest.mark.parametrize("text, message", [
    ("time_s,rps\n0,100\nten,3\n", ":3: expects time_s,rps numbers"),
    ("0,100\n5,-1\n", ":2: expects rps >= 0"),
    ("time_s,rps\n", "no time_s,rps rows"),
])
def test_a_bad_csv_trace_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        from_csv(str(path))


def test_json_rows_have_the_issues_keys(capsys):
    assert main(["--policies", "concurrency,oracle", "--traces", "step", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in rows] == ["concurrency", "oracle"]
    assert set(rows[0]) == {"policy", "trace", "slo_violation_pct", "replica_seconds",
                            "time_to_capacity_s", "scale_events", "started", "stopped", "held", "held_failed",
                            "seed"}


def test_the_table_and_a_user_trace(capsys, tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("0,200\n30,200\n")
    assert main(["--policies", "hpa,step", "--traces", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| trace | policy |")
    assert out[2].startswith("| flat | hpa | 0.00 | 60 |")


@pytest.mark.parametrize("args, message", [
    (["--policies", "nope"], "expects one of"),
    (["--traces", "/no/such.csv"], "No such file"),
    (["--set", "step_size"], "expects KEY=VALUE"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "plot.png"
    assert main(["--policies", "concurrency,oracle", "--traces", "step,spike", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SMOOTH = ("step", "spike", "ramp", "sine", "sawtooth")


def test_the_default_policy_meets_the_issues_bars():
    """Issue 5's bars on the smooth traces; issue 11 lets spike cost up to 1.6x the oracle."""
    model, traces = Model(), bundled()
    rows = {(p, t): simulate(traces[t], p, model, SETTINGS)
            for t in SMOOTH for p in ("concurrency", "step", "hpa", "oracle")}
    for t in SMOOTH:
        mine = rows["concurrency", t]
        assert mine.slo_violation_pct <= rows["step", t].slo_violation_pct, t
        assert mine.slo_violation_pct <= rows["hpa", t].slo_violation_pct, t
        if t != "sawtooth":
            limit = 1.6 if t == "spike" else 1.5
            assert mine.replica_seconds <= limit * rows["oracle", t].replica_seconds, t
    assert rows["concurrency", "step"].time_to_capacity_s <= 15.0


# The floor of late requests under noise is those whose own service time is over the SLO (about
# 0.31% with log-normal service times of CV 0.5), the same for every policy: on `sine` the default
# and hpa differ by a few requests, compared strictly. Seed 4 is where the rise out of the trough
# was late before change 7 (policies/concurrency.py).
def test_the_default_policy_meets_the_noisy_bars_of_issue_11():
    """--noise, a 70% target, a seed that is not the default one."""
    model, traces = Model(noise=True, seed=4), bundled()
    settings = {**SETTINGS, "target_inflight": 7}
    for t in ("step", "spike", "ramp", "sine", "sawtooth", "steady"):
        rows = {p: simulate(traces[t], p, model, settings) for p in ("concurrency", "step", "hpa", "oracle")}
        mine, oracle = rows["concurrency"], rows["oracle"]
        assert mine.slo_violation_pct <= rows["step"].slo_violation_pct, t
        assert mine.slo_violation_pct <= rows["hpa"].slo_violation_pct, t
        assert mine.replica_seconds <= 1.3 * oracle.replica_seconds, t
        if t in ("step", "spike", "ramp"):
            assert mine.scale_events <= 1.5 * oracle.scale_events + 4, t
        if t == "steady":
            assert mine.events_after(60.0) <= 2


# Seeds found by running the bars over seeds 1-20: sine late out of a trough at 2 and 4 replicas
# (9, 10), sawtooth at 1.3005x the oracle with a 15 s scale-down delay (19). See change 7 and 3.
@pytest.mark.parametrize(("seed", "trace"), [(9, "sine"), (10, "sine"), (19, "sawtooth")])
def test_the_noisy_bars_hold_on_the_seeds_that_once_missed_them(seed, trace):
    model, traces = Model(noise=True, seed=seed), bundled()
    settings = {**SETTINGS, "target_inflight": 7}
    rows = {p: simulate(traces[trace], p, model, settings) for p in ("concurrency", "step", "hpa", "oracle")}
    mine = rows["concurrency"]
    assert mine.slo_violation_pct <= min(rows["step"].slo_violation_pct, rows["hpa"].slo_violation_pct)
    assert mine.replica_seconds <= 1.3 * rows["oracle"].replica_seconds


@pytest.mark.parametrize("noise", [False, True])
def test_bursty_at_min_zero_serves_every_held_request_at_most_1_5x_the_oracle(noise):
    model = Model(noise=noise, seed=2, min_replicas=0)
    settings = {**SETTINGS, "min_replicas": 0, "target_inflight": 7 if noise else 10}
    trace = bundled()["bursty"]
    mine, oracle = simulate(trace, "concurrency", model, settings), simulate(trace, "oracle", model, settings)
    assert mine.held > 0 and mine.held_failed == 0
    assert mine.replica_seconds <= 1.5 * oracle.replica_seconds
    assert [n for _, _, n in mine.events].count(0) == 1  # idled to zero between the bursts


def test_noise_is_poisson_with_the_mean_service_time_and_the_same_for_every_policy():
    model = Model(noise=True, seed=5, initial_replicas=4)
    a = simulate(flat(200.0, 120.0), Fixed(4), model, SETTINGS)
    b = simulate(flat(200.0, 120.0), "hpa", model, SETTINGS)
    assert a.requests == b.requests
    assert a.requests == pytest.approx(200.0 * 120.0, rel=0.03)       # Poisson: sd 155 of 24,000
    assert a.mean_inflight == pytest.approx(20.0, rel=0.05)           # Little's law, 100 ms mean
    assert simulate(flat(200.0, 120.0), Fixed(4), Model(noise=True, seed=6, initial_replicas=4),
                    SETTINGS).requests != a.requests


def test_at_zero_requests_are_held_through_the_cold_start_then_served():
    # One request a second from 0 s; the first held one triggers a decision at once.
    r = simulate(flat(10.0, 30.0), Fixed(1), Model(min_replicas=0, initial_replicas=0), SETTINGS)
    assert r.events[0] == (0.0, 0, 1)
    assert r.held == pytest.approx(10.0 * 5.0, rel=0.05)  # those that arrived during the 5 s cold start
    assert r.held_failed == 0
    # Held ones waited more than the SLO (and a few after them queue behind the backlog).
    assert 100.0 * r.held / r.requests <= r.slo_violation_pct <= 100.0 * (r.held + 5) / r.requests


def test_held_requests_fail_after_the_hold_timeout_when_nothing_starts():
    r = simulate(flat(10.0, 30.0), Fixed(0), Model(min_replicas=0, initial_replicas=0, hold_timeout_s=10), SETTINGS)
    assert r.held == pytest.approx(300.0) and r.held_failed == pytest.approx(300.0)
    assert r.slo_violation_pct == 100.0


def test_the_loop_enforces_the_idle_rule_whatever_the_policy_says():
    model = Model(min_replicas=0, initial_replicas=2, scale_to_zero_after=20)
    load = Trace("gap", 60.0, lambda t: 100.0 if t < 10 else 0.0)
    r = simulate(load, Fixed(0), model, SETTINGS)
    assert [(round(t), a, b) for t, a, b in r.events] == [(2, 2, 1), (30, 1, 0)]


def test_several_seeds_report_the_mean_and_the_worst(capsys):
    assert main(["--policies", "concurrency,oracle", "--traces", "steady", "--noise", "--seeds", "2",
                 "--duration", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| steady | concurrency |") and "(" in out[2]
