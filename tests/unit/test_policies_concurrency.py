"""The default policy, table-driven: each case is a run of snapshots and the replicas wanted after each."""

import pytest

from policies import Decision, Snapshot, make
from policies.concurrency import ConcurrencyPolicy, PanicState

SETTINGS = {"target_inflight": 10, "target_rps": 50, "target_p95_ms": 250, "stable_window": 60,
            "panic_window": 6, "scale_interval": 2, "max_scale_up_rate": 1000, "max_scale_down_rate": 2}


def snap(now, replicas, stable, panic=None, ready=None, coverage=60.0):
    panic = stable if panic is None else panic
    return Snapshot(now=now, replicas=replicas, ready_replicas=replicas if ready is None else ready,
                    stable_inflight=stable, panic_inflight=panic, stable_rps=None, panic_rps=None,
                    stable_coverage_s=coverage)


def run(policy, snapshots, state=None):
    state = policy.initial_state() if state is None else state
    decisions = []
    for s in snapshots:
        decision, state = policy.decide(s, state)
        assert isinstance(decision, Decision) and decision.reason
        decisions.append(decision)
    return decisions, state


CASES = [
    # name, snapshots, replicas wanted after each
    ("steady load at target holds", [snap(t, 4, 40.0) for t in (100, 102, 104)], [4, 4, 4]),
    ("steady fractional load rounds up", [snap(100, 3, 21.0)], [3]),
    ("step up by the panic window (the stable window guards start-up only)", [snap(100, 2, 35.0, 30.0)], [3]),
    ("a burst of 2x capacity panics and scales on the panic window",
     [snap(100, 2, 22.0, 40.0)], [4]),
    ("panic holds the most seen while load drops",
     [snap(100, 2, 22.0, 60.0), snap(102, 6, 25.0, 10.0, ready=2), snap(104, 6, 25.0, 10.0)], [6, 6, 6]),
    ("panic ends a panic window after the last trigger; down after the scale-down delay, at the rate limit",
     [snap(100, 2, 22.0, 60.0), snap(104, 6, 20.0, 20.0), snap(107, 6, 20.0, 20.0), snap(116, 6, 20.0, 20.0)],
     [6, 6, 6, 3]),
    ("a steady rise provisions ahead by the lead (cold start + interval + half the panic window)",
     [snap(100 + 2 * i, 4, 38.0, 38.0 + 2 * i) for i in range(4)], [4, 4, 5, 6]),
    ("a single fast rise is not a trend yet", [snap(100, 4, 38.0, 38.0), snap(102, 4, 38.0, 44.0)], [4, 5]),
    ("a step seen through the window is not a trend once it is flat",
     [snap(100 + 2 * i, 1, 4.0, min(4.0, max(0.0, 4.0 * i / 3))) for i in range(-6, 8)], [1] * 14),
    ("step down, limited by the scale-down rate", [snap(100, 8, 10.0)], [4]),
    ("step down to the stable desire", [snap(100, 4, 25.0)], [3]),
    ("no scale-down before a full stable window", [snap(30, 8, 10.0, coverage=30.0)], [8]),
    ("scale-up is allowed before a full stable window", [snap(30, 1, 30.0, coverage=30.0)], [3]),
    ("flapping panic input does not flap the replicas",
     [snap(100 + 2 * i, 4 if i == 0 else 9, 40.0, 90.0 if i % 2 == 0 else 5.0) for i in range(6)], [9] * 6),
    ("flapping just around the target: up once, then held through the scale-down delay",
     [snap(100 + 2 * i, 4 if i == 0 else 5, 40.0 + (1.0 if i % 2 else -1.0)) for i in range(4)], [4, 5, 5, 5]),
    ("a start is not cancelled: no scale-down within a cold start of scaling up",
     [snap(100, 4, 38.0, 50.0), snap(102, 5, 38.0, 38.0, ready=4), snap(106, 5, 38.0, 38.0, ready=4),
      snap(118, 5, 38.0, 38.0, ready=4)],
     [5, 5, 5, 4]),
    ("replicas that never get ready do not block scale-down", [snap(100, 6, 20.0, 20.0, ready=4)], [2]),
    ("no data holds", [snap(100, 3, None)], [3]),
    ("zero load keeps one replica: zero is only the scale-to-zero rule's", [snap(100, 1, 0.0)], [1]),
    ("nothing ready counts as one ready replica", [snap(100, 3, 15.0, 15.0, ready=0)], [3]),
]


@pytest.mark.parametrize("name, snapshots, wanted", CASES, ids=[c[0] for c in CASES])
def test_concurrency(name, snapshots, wanted):
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), snapshots)
    assert [d.replicas for d in decisions] == wanted


def test_scale_up_rate_limits_the_step():
    policy = ConcurrencyPolicy({**SETTINGS, "max_scale_up_rate": 2})
    decisions, _ = run(policy, [snap(100, 2, 100.0, 100.0)])
    assert decisions[0].replicas == 4
    assert "scale-up rate" in decisions[0].reason


def test_missing_data_reason_says_so():
    decisions, state = run(ConcurrencyPolicy(SETTINGS), [snap(100, 3, None)])
    assert "no in flight data" in decisions[0].reason
    assert state == PanicState()


def test_missing_panic_window_falls_back_to_stable():
    s = Snapshot(now=100, replicas=2, ready_replicas=2, stable_inflight=30.0, panic_inflight=None,
                 stable_rps=None, panic_rps=None, stable_coverage_s=60)
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [s])
    assert decisions[0].replicas == 3


def test_restart_forgets_panic_and_waits_for_a_full_window():
    policy = ConcurrencyPolicy(SETTINGS)
    _, state = run(policy, [snap(100, 2, 22.0, 60.0)])
    assert state.panic_since == 100
    # A restarted balancer starts from a fresh state and windows with little data.
    decisions, fresh = run(policy, [snap(5, 6, 10.0, 10.0, coverage=4.0)])
    assert decisions[0].replicas == 6 and "stable window" in decisions[0].reason
    assert fresh.panic_since is None


def test_reasons_are_sentences_with_numbers():
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [snap(100, 2, 35.0, 30.0)])
    assert decisions[0].reason.startswith("3 replicas: 30.0 in flight over 6 s wants 3")


def test_built_by_name_with_partial_settings():
    policy = make("concurrency", {"target_inflight": 5})
    assert policy.name == "concurrency"
    decisions, _ = run(policy, [snap(100, 2, 12.0)])
    assert decisions[0].replicas == 3


def test_a_drained_queue_in_the_stable_window_does_not_hold_replicas():
    # After a burst: the 60 s average still carries the queue's in-flight time (300), but the
    # requests completed at 550/s with a typical 100 ms: 55 in flight, 6 replicas.
    s = Snapshot(now=240, replicas=20, ready_replicas=20, stable_inflight=300.0, panic_inflight=10.0,
                 stable_rps=550.0, panic_rps=100.0, p50_ms=100.0, stable_coverage_s=60)
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [s])
    assert decisions[0].replicas == 10  # 6 wanted, halved at most per decision
    assert "rate x p50; 300.0 measured" in decisions[0].reason


def test_the_median_cap_never_lowers_below_the_panic_window():
    # Skewed latencies make rate x p50 low; the panic window still sets the floor.
    s = Snapshot(now=240, replicas=5, ready_replicas=5, stable_inflight=50.0, panic_inflight=50.0,
                 stable_rps=500.0, panic_rps=500.0, p50_ms=50.0, stable_coverage_s=60)
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [s])
    assert decisions[0].replicas == 5


def test_panic_hold_is_a_setting():
    policy = ConcurrencyPolicy({**SETTINGS, "panic_hold_s": 60})
    decisions, _ = run(policy, [snap(100, 2, 22.0, 60.0), snap(150, 6, 20.0, 20.0), snap(161, 6, 20.0, 20.0)])
    assert [d.replicas for d in decisions] == [6, 6, 3]


def test_rising_load_is_explained():
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [snap(100 + 2 * i, 4, 38.0, 38.0 + 2 * i) for i in range(4)])
    assert "rising 1.0/s (so 54.0 in 10 s)" in decisions[-1].reason


def windowed_run(policy, inflight_at, seconds, replicas=1, rps_per_inflight=20.0, start=0.0):
    """Feed SlidingWindows as the control loop does (a sample a second, a decision every 2 s) with
    `inflight_at(t)` concurrent requests, replicas following the decisions; the counts decided."""
    from policies.windows import SlidingWindows

    windows = SlidingWindows(60.0, 6.0)
    state, counts = policy.initial_state(), []
    integral = requests = 0.0
    t = start
    while t < start + seconds:
        windows.observe(t, integral, requests)
        if t > start and int(t) % 2 == 0:
            s = Snapshot(now=t, replicas=replicas, ready_replicas=replicas, p50_ms=50.0,
                         **vars(windows.averages(t)))
            decision, state = policy.decide(s, state)
            replicas = decision.replicas
            counts.append(replicas)
        load = inflight_at(t - start)
        integral += load
        requests += load * rps_per_inflight
        t += 1.0
    return counts


def test_the_first_four_users_at_one_replica_do_not_add_a_second():
    # The demo: target 8, 4 users (4 in flight) arriving at once after a quiet minute.
    policy = ConcurrencyPolicy({**SETTINGS, "target_inflight": 8, "stable_window": 30})
    counts = windowed_run(policy, lambda t: 0.0 if t < 60 else 4.0, 180)
    assert set(counts) == {1}


def test_a_restarted_balancer_under_48_reconnecting_clients_reads_no_trend():
    # Restarted with 7 replicas: the windows start empty and the clients reconnect within 3 s.
    policy = ConcurrencyPolicy({**SETTINGS, "target_inflight": 8, "stable_window": 30})
    counts = windowed_run(policy, lambda t: min(48.0, 16.0 * t), 120, replicas=7)
    assert max(counts) == 7 and counts[:14] == [7] * 14  # kept while the 30 s stable window fills
    assert counts[-1] == 6  # then 48 / 8, once


def test_a_real_ramp_after_a_restart_is_still_followed():
    policy = ConcurrencyPolicy({**SETTINGS, "target_inflight": 8, "stable_window": 30})
    counts = windowed_run(policy, lambda t: 8.0 + 2.0 * t, 30)
    assert counts[-1] >= 9  # 68 in flight at 30 s, and rising


def test_the_lead_uses_the_measured_cold_start():
    rising = [snap(100 + 2 * i, 4, 38.0, 38.0 + 2 * i) for i in range(4)]
    measured = [Snapshot(**{**vars(s), "cold_start_s": 25.0}) for s in rising]
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), measured)
    assert "so 74.0 in 30 s" in decisions[-1].reason  # 25 s measured + 2 s interval + 3 s
    decisions, _ = run(ConcurrencyPolicy({**SETTINGS, "lead_s": 4}), measured)
    assert "in 4 s" in decisions[-1].reason  # a configured lead wins


def zero(now, replicas, held=0, idle=0.0, inflight=None, ready=None):
    inflight = float(held) if inflight is None else inflight
    return Snapshot(now=now, replicas=replicas, ready_replicas=replicas if ready is None else ready,
                    stable_inflight=inflight, panic_inflight=inflight, stable_rps=None, panic_rps=None,
                    stable_coverage_s=60.0, held=held, idle_s=idle)


def test_scale_to_zero_when_idle_long_enough_and_min_replicas_is_zero():
    policy = ConcurrencyPolicy({**SETTINGS, "min_replicas": 0, "scale_to_zero_after": 300})
    decisions, _ = run(policy, [zero(100, 2, idle=299.0, inflight=0.0), zero(102, 2, idle=301.0, inflight=0.0)])
    assert [d.replicas for d in decisions] == [1, 0]
    assert "nothing in flight or arriving for 301 s" in decisions[1].reason
    decisions, _ = run(ConcurrencyPolicy(SETTINGS), [zero(100, 1, idle=1000.0, inflight=0.0)])
    assert decisions[0].replicas == 1  # min_replicas 1: never zero


def test_at_zero_held_requests_ask_for_all_they_need_at_once():
    policy = ConcurrencyPolicy({**SETTINGS, "min_replicas": 0})
    # The windows lag (nothing in them yet); 64 held at a target of 10: 7 replicas.
    decisions, _ = run(policy, [zero(100, 0, held=64, inflight=0.0, ready=0)])
    assert decisions[0].replicas == 7 and "64 held" in decisions[0].reason
    decisions, _ = run(policy, [zero(100, 0, held=1, inflight=0.0, ready=0)])
    assert decisions[0].replicas == 1


def test_held_requests_right_after_a_start_at_zero_with_no_window_yet():
    s = Snapshot(now=1, replicas=0, ready_replicas=0, stable_inflight=None, panic_inflight=None,
                 stable_rps=None, panic_rps=None, held=3)
    decisions, _ = run(ConcurrencyPolicy({**SETTINGS, "min_replicas": 0}), [s])
    assert decisions[0].replicas == 1
