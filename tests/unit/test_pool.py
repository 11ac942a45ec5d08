"""The pool: membership, picking, slow start, ejection, retry budget, and what the control loop reads."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lb.clock import FakeClock
from lb.collect.latency import RollingHistogram
from lb.collect.pool import Pool


def make_pool(addresses=("a:1", "b:2"), **kw) -> tuple[Pool, FakeClock]:
    clock = FakeClock()
    pool = Pool(clock, rng=random.Random(7), **kw)
    pool.update(addresses)
    return pool, clock


def test_update_adds_in_slow_start_and_drains_missing_until_idle():
    pool, clock = make_pool()
    assert [b.state for b in pool.backends] == ["active", "active"]   # the first set starts active
    a = pool.get("a:1")
    started = pool.begin(a)
    pool.update(["b:2", "c:3"])
    assert {b.address: b.state for b in pool.backends} == {"a:1": "draining", "b:2": "active",
                                                           "c:3": "slow_start"}
    assert pool.ready_count() == 2
    assert all(pool.pick() is not a for _ in range(50)), "a draining backend gets no new requests"
    pool.end(a, started, 200)
    assert [b.address for b in pool.backends] == ["b:2", "c:3"], "removed once its last request ended"
    clock._now += 11
    assert pool.pick() is not None and pool.get("c:3").state == "active"


def test_pick_prefers_fewer_in_flight_and_lower_latency():
    pool, clock = make_pool(("a:1", "b:2"))
    a, _b = pool.get("a:1"), pool.get("b:2")
    for _ in range(3):
        pool.begin(a)
    assert Counter(pool.pick().address for _ in range(20)) == {"b:2": 20}
    pool2, _ = make_pool(("a:1", "b:2"))
    pool2.get("a:1").ewma, pool2.get("b:2").ewma = 0.100, 0.010
    assert pool2.pick().address == "b:2"


def test_power_of_two_spreads_load_over_many():
    pool, clock = make_pool([f"h{i}:1" for i in range(5)])
    for _ in range(500):   # requests that never finish: in-flight decides
        pool.begin(pool.pick())
    counts = [b.inflight for b in pool.backends]
    assert max(counts) - min(counts) <= 3


def test_new_backend_is_eased_in_not_flooded():
    pool, clock = make_pool(("a:1",))
    pool.update(["a:1", "new:2"])
    a, _new = pool.get("a:1"), pool.get("new:2")
    a.inflight = 4      # the old one is busy: least-request alone would send everything to the new one
    early = Counter(pool.pick().address for _ in range(100))
    clock._now += 9
    late = Counter(pool.pick().address for _ in range(100))
    assert early["new:2"] == 0 < late["new:2"]


def test_ejection_doubles_and_never_ejects_the_last():
    pool, clock = make_pool(("a:1", "b:2"), eject_after=2, eject_base_s=5)
    a, b = pool.get("a:1"), pool.get("b:2")
    pool.failure(a)
    assert a.state == "active"
    pool.failure(a)
    assert a.state == "ejected" and pool.ejections_total == 1 and a.ejected_until == clock.now() + 5
    for _ in range(5):
        pool.failure(b)
    assert b.state == "active", "the last serving backend stays"
    assert all(pool.pick() is b for _ in range(10))
    clock._now += 5
    assert pool.pick(exclude=(b,)) is a and a.state == "active"
    pool.failure(a)
    pool.failure(a)
    assert a.state == "ejected" and a.ejected_until == clock.now() + 10, "the second ejection is twice as long"


def test_successes_reset_the_failure_streak():
    pool, clock = make_pool(("a:1", "b:2"), eject_after=2)
    a = pool.get("a:1")
    pool.failure(a)
    pool.end(a, pool.begin(a), 200)
    pool.failure(a)
    assert a.state == "active"


def test_retry_budget():
    pool, _ = make_pool(("a:1", "b:2"), retry_budget=0.2)
    a = pool.get("a:1")
    a.consecutive_failures = 1   # a backend already failing: its losses meet the budget alone
    assert [pool.try_retry(a) for _ in range(4)] == [True, True, True, False]   # floor of 3
    assert pool.retries_refused == 1
    pool.retry_done()
    assert pool.try_retry(a)
    assert pool.retries_total == 4


def test_every_request_a_backend_held_when_it_broke_may_be_retried():
    pool, _ = make_pool(("a:1", "b:2"), retry_budget=0.2)
    a, b = pool.get("a:1"), pool.get("b:2")
    for _ in range(12):
        pool.begin(a)
    for _ in range(12):
        pool.begin(b)
    # a dies: all 12 of its requests are lost at once, each retried, then abandoned on a (as the proxy does)
    granted = []
    for _ in range(12):
        granted.append(pool.try_retry(a))
        pool.abandon(a)
        pool.begin(b)
    assert granted == [True] * 12 and pool.retries_refused == 0
    # further losses on the still-broken backend are back under the budget: 12 retries in progress
    # are more than 0.2 x 24 in flight
    pool.begin(a)
    assert not pool.try_retry(a)
    assert pool.retries_refused == 1


def test_a_backend_breaking_while_another_fails_gets_only_the_budget():
    pool, _ = make_pool(("a:1", "b:2", "c:3"), retry_budget=0.2)
    a, b = pool.get("a:1"), pool.get("b:2")
    for _ in range(10):
        pool.begin(a)
        pool.begin(b)
    pool.failure(a)   # a is failing already: b breaking too is no longer one backend's loss
    assert [pool.try_retry(b) for _ in range(5)] == [True] * 4 + [False]   # 0.2 x 20 in flight


def test_load_sample_integrates_inflight_over_time():
    pool, clock = make_pool(("a:1",))
    a = pool.get("a:1")
    s0 = pool.load_sample(clock.now())
    t1 = pool.begin(a)
    pool.begin(a)
    clock._now += 2        # two in flight for 2 s
    pool.end(a, t1, 200)
    clock._now += 1        # one in flight for 1 s
    s1 = pool.load_sample(clock.now())
    assert s1.inflight_seconds - s0.inflight_seconds == pytest.approx(5.0)
    assert (s1.requests_total, s1.inflight) == (1, 1)


def test_latency_quantiles_over_a_window():
    pool, clock = make_pool(("a:1",))
    a = pool.get("a:1")
    for ms in range(1, 101):          # 1..100 ms, an old second
        t = pool.begin(a)
        clock._now += ms / 1000
        pool.end(a, t, 200)
    clock._now += 120
    assert pool.latency_quantiles(60) == [None, None, None]
    for _ in range(10):
        t = pool.begin(a)
        clock._now += 0.5
        pool.end(a, t, 200)
    p50, p95, p99 = pool.latency_quantiles(60)
    assert p50 == pytest.approx(500, rel=0.05) and p99 == pytest.approx(500, rel=0.05)


def test_histogram_quantiles_are_close():
    h = RollingHistogram()
    for ms in range(1, 1001):
        h.record(100.0, ms / 1000)
    p50, p95, p99 = h.quantiles(100.5, 10, (0.5, 0.95, 0.99))
    assert p50 == pytest.approx(500, rel=0.05)
    assert p95 == pytest.approx(950, rel=0.05)
    assert p99 == pytest.approx(990, rel=0.05)
    assert h.prom_cumulative()[-1] == ("+Inf", 1000)


def test_a_reaped_backend_closes_all_its_idle_connections():
    class Conn:   # closing takes a connection out of its backend's idle list, as UpstreamConnection does
        closed = False

        def __init__(self, backend):
            self.backend = backend

        def close(self):
            self.closed = True
            if self in self.backend.idle:
                self.backend.idle.remove(self)

    pool, _ = make_pool(("a:1", "b:2"))
    a = pool.get("a:1")
    conns = [Conn(a) for _ in range(4)]
    a.idle.extend(conns)
    pool.update(["b:2"])
    assert a.retired and all(c.closed for c in conns) and a.idle == []


def test_an_attempt_ends_its_accounting_exactly_once():
    pool, clock = make_pool(("a:1",))
    a = pool.get("a:1")
    first = pool.attempt(a)
    assert pool.inflight == 1 and a.inflight == 1
    first.abandon(failed=True)          # retried elsewhere...
    first.end(502, failed=True)         # ...and a late path that ends it again does nothing
    second = pool.attempt(a)
    clock._now += 0.05
    second.end(200)
    second.end(200)
    second.abandon()
    assert pool.inflight == 0 and a.inflight == 0
    assert pool.requests_total == 1 and a.requests == {200: 1} and a.errors == 1
