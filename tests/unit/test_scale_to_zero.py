"""Scale to zero: the control loop's rules around zero, and the hold queue, with fakes and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lb.clock import FakeClock
from lb.collect.backend import EJECTED
from lb.collect.pool import Pool
from lb.config import Config
from lb.control import ControlLoop
from lb.orchestrators.memory import MemoryOrchestrator
from lb.routing.hold import HoldQueue
from policies.base import Decision


@dataclass
class Sample:
    inflight_seconds: float
    requests_total: int
    inflight: int


class Load:
    """What the loop reads from a pool: nothing in flight unless told, `held` requests waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.held = 0
        self.inflight = 0
        self.active_at = clock.now()
        self.ready = 1

    def load_sample(self, now: float) -> Sample:
        return Sample(0.0, 0, self.inflight)

    def ready_count(self) -> int:
        return self.ready

    def latency_quantiles(self, window_s, qs=(0.5, 0.95, 0.99)):
        return [None for _ in qs]

    def idle_s(self, now: float) -> float:
        return 0.0 if self.inflight or self.held else now - self.active_at


class Wants:
    """A user's policy that always answers `n`."""

    name = "wants"

    def __init__(self, n: int) -> None:
        self.n = n

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        return Decision(self.n, f"always {self.n}"), state


def make(replicas: int, policy=None, **env: str):
    values = {"LB_MIN_REPLICAS": "0", "LB_SCALE_TO_ZERO_AFTER": "10", "LB_STABLE_WINDOW": "5",
              "LB_PANIC_WINDOW": "2", "LB_SCALE_INTERVAL": "1", "LB_TARGET_INFLIGHT": "8", **env}
    config = Config.from_env(values)
    clock = FakeClock()
    load = Load(clock)
    orchestrator = MemoryOrchestrator([], replicas=replicas)
    loop = ControlLoop(config, load, orchestrator, clock=clock, policy=policy, name="web")
    loop._started_at = clock.now()
    return loop, clock, load, orchestrator


async def test_goes_to_zero_after_the_idle_time_whatever_the_policy_wants():
    loop, clock, load, orch = make(1, Wants(1))
    await clock.advance(9)
    await loop.tick()
    assert orch.replicas == 1
    await clock.advance(2)
    await loop.tick()
    assert orch.replicas == 0
    assert "idle" in loop.status.last_decision["reason"]
    # And stays there: the windows' old traffic does not bring it back, only a held request does.
    await clock.advance(1)
    await loop.tick()
    assert orch.scale_calls == [0]


@pytest.mark.parametrize("busy", ["inflight", "held", "stream"])
async def test_never_to_zero_while_anything_is_open(busy):
    loop, clock, load, orch = make(1, Wants(0))
    if busy == "inflight":
        load.inflight = 1
    elif busy == "held":
        load.held = 1
    else:
        loop.open_streams = lambda: 1
    await clock.advance(60)
    await loop.tick()
    assert orch.replicas == 1


async def test_not_to_zero_within_the_first_stable_window_after_start():
    loop, clock, load, orch = make(1, Wants(0), LB_STABLE_WINDOW="120")
    await clock.advance(60)
    await loop.tick()
    assert orch.replicas == 1
    assert "stable window" in loop.status.last_decision["reason"]


async def test_a_policy_that_wants_zero_before_the_idle_time_gets_one():
    loop, clock, load, orch = make(2, Wants(0))
    await clock.advance(6)
    await loop.tick()
    assert orch.replicas == 1


async def test_held_requests_set_a_floor_of_ceil_held_over_target():
    loop, clock, load, orch = make(0, Wants(0))
    load.held, load.ready = 64, 0
    await loop.tick()
    assert orch.scale_calls == [8]
    assert "64 requests held" in loop.status.last_decision["reason"]
    assert loop.status.last_decision["inputs"]["held"] == 64


async def test_the_floor_is_one_for_a_policy_without_an_inflight_target():
    loop, clock, load, orch = make(0, None, LB_POLICY="rps")
    load.held, load.ready = 64, 0
    await loop.tick()
    assert orch.scale_calls and orch.scale_calls[0] >= 1   # at least one, whatever the policy


async def test_a_cold_start_is_measured_from_the_scale_request_to_serving():
    loop, clock, load, orch = make(0, Wants(0))
    load.held, load.ready = 3, 0
    await loop.tick()
    await clock.advance(2.5)
    loop.served(clock.now())
    assert loop.cold_start_s == 2.5
    assert loop.snapshot(clock.now(), 1).cold_start_s == 2.5
    assert loop.status_json()["measured_cold_start_s"] == 2.5


# --- the hold queue ------------------------------------------------------------------------------
class Waiter:
    def __init__(self, log: list, name: str) -> None:
        self.log = log
        self.name = name
        self.finished = False

    def start(self) -> None:
        self.finished = True
        self.log.append((self.name, "start"))

    def unhold(self, status: int) -> None:
        self.finished = True
        self.log.append((self.name, status))


def queue(**kw) -> tuple[HoldQueue, Pool, FakeClock, list]:
    clock = FakeClock()
    pool = Pool(clock)
    q = HoldQueue("web", pool, clock, max_held=kw.pop("max_held", 10), timeout=kw.pop("timeout", 5.0))
    return q, pool, clock, []


async def test_held_requests_count_as_in_flight_and_the_first_one_wakes_the_loop():
    q, pool, clock, log = queue()
    woken = []
    q.on_first.append(lambda: woken.append(1))
    assert q.hold(Waiter(log, "a")) and q.hold(Waiter(log, "b"))
    assert woken == [1]                  # once per wait, not once per request
    assert pool.held == 2 and pool.inflight == 2
    assert q.status()["held"] == 2


async def test_released_in_arrival_order_once_a_backend_serves(monkeypatch):
    q, pool, clock, log = queue()
    for name in "abc":
        q.hold(Waiter(log, name))
    await q.step()
    assert log == []                     # no backend yet
    pool.update(["127.0.0.1:9"])

    async def connectable() -> bool:
        return True
    monkeypatch.setattr(q, "_connectable", connectable)
    await clock.advance(1.5)
    await q.step()
    assert log == [("a", "start"), ("b", "start"), ("c", "start")]
    assert pool.held == 0 and q.cold_starts == 1 and q.last_cold_start_s == 1.5


async def test_not_released_while_the_balancer_cannot_connect(monkeypatch):
    q, pool, clock, log = queue()
    q.hold(Waiter(log, "a"))
    pool.update(["127.0.0.1:9"])

    async def refused() -> bool:
        return False
    monkeypatch.setattr(q, "_connectable", refused)
    await q.step()
    assert log == [] and q.held == 1


async def test_timeouts_get_504_full_gets_refused_gone_clients_are_dropped():
    q, pool, clock, log = queue(max_held=2, timeout=5.0)
    a, b = Waiter(log, "a"), Waiter(log, "b")
    assert q.hold(a) and q.hold(b)
    assert not q.hold(Waiter(log, "c"))  # full: the proxy answers 503 at once
    b.finished = True                    # its client went away
    await clock.advance(5)
    await q.step()
    assert log == [("a", 504)]
    assert (q.timeouts_total, q.dropped_total, q.rejected_total) == (1, 1, 1)
    assert pool.held == 0 and pool.inflight == 0


async def test_a_failed_start_answers_503_to_all_and_backs_off():
    q, pool, clock, log = queue()
    q.start_error = lambda since: "task rejected: No such image"
    q.hold(Waiter(log, "a"))
    q.hold(Waiter(log, "b"))
    await q.step()
    assert log == [("a", 503), ("b", 503)]
    assert q.cold_start_failures == 1 and "No such image" in q.status()["last_cold_start_error"]
    assert not q.hold(Waiter(log, "c"))  # backing off: refused at once
    await clock.advance(1.0)
    assert q.hold(Waiter(log, "d"))      # then tried again
    await q.step()
    assert q.retry_after() == 2          # the backoff doubled


async def test_a_hold_while_every_backend_is_ejected_is_not_a_cold_start(monkeypatch):
    q, pool, clock, log = queue()
    pool.update(["127.0.0.1:9"])
    backend = pool.backends[0]
    backend.state, backend.ejected_until = EJECTED, clock.now() + 1.0
    pool._refresh(clock.now())
    assert pool.ready_count() == 0
    q.hold(Waiter(log, "a"))

    async def connectable() -> bool:
        return True
    monkeypatch.setattr(q, "_connectable", connectable)
    await q.step()
    await clock.advance(1.5)         # the ejection ends: the backend serves again
    pool._refresh(clock.now())
    await q.step()
    assert log == [("a", "start")]
    status = q.status()
    assert (status["holds"], status["cold_starts"], status["last_cold_start_s"]) == (1, 0, None)


async def test_a_hold_before_discovery_has_looked_is_a_cold_start_only_if_no_task_runs(monkeypatch):
    """A balancer that has just started holds its first requests until discovery's first look:
    a cold start when the engine then says no task runs, not when a task was there all along."""
    async def connectable() -> bool:
        return True

    for tasks_found, cold in (([], 1), (["127.0.0.1:9"], 0)):
        q, pool, clock, log = queue()
        looked = []
        q.known = lambda looked=looked: bool(looked)
        monkeypatch.setattr(q, "_connectable", connectable)
        q.hold(Waiter(log, "a"))
        await q.step()                # not looked yet: nothing known
        looked.append(1)
        pool.update(tasks_found)      # the first look
        await q.step()
        if not tasks_found:
            pool.update(["127.0.0.1:9"])   # the task the cold start asked for
            await clock.advance(2.0)
            await q.step()
        assert log == [("a", "start")]
        assert (q.holds, q.cold_starts) == (1, cold)
