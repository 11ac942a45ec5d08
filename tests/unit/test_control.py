"""The control loop against the in-memory orchestrator, with a fake clock and a load source.

The load source stands in for the proxy's pool: it integrates a concurrency level the test sets over
the fake clock's time, exactly the counters the real pool keeps.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from lb.clock import FakeClock
from lb.config import Config
from lb.control import ControlLoop
from lb.orchestrators.base import OrchestratorError
from lb.orchestrators.memory import MemoryOrchestrator
from policies import Decision


@dataclass
class LoadSample:
    inflight_seconds: float
    requests_total: int
    inflight: int


class SteadyLoad:
    """`inflight` concurrent requests of `latency` seconds each, from the moment it is set."""

    def __init__(self, clock: FakeClock, latency: float = 0.1) -> None:
        self.clock, self.latency = clock, latency
        self.inflight = 0
        self._integral, self._since = 0.0, clock.now()

    def set(self, inflight: int) -> None:
        self._advance()
        self.inflight = inflight

    def _advance(self) -> None:
        now = self.clock.now()
        self._integral += self.inflight * (now - self._since)
        self._since = now

    def load_sample(self, now: float) -> LoadSample:
        self._advance()
        # Little's law: completions per second = concurrency / latency.
        return LoadSample(self._integral, int(self._integral / self.latency), self.inflight)

    def ready_count(self) -> int:
        return 1

    def latency_quantiles(self, window_s, qs=(0.5, 0.95, 0.99)):
        return [self.latency * 1000.0 for _ in qs]


WEB = {"service": "web"}   # every scaling series names its service


def make_loop(replicas=1, **env):
    values = {"LB_TARGET_INFLIGHT": "10", "LB_STABLE_WINDOW": "20", "LB_PANIC_WINDOW": "4",
              "LB_SCALE_INTERVAL": "2", "LB_MIN_REPLICAS": "1", "LB_MAX_REPLICAS": "10"}
    values.update(env)
    config = Config.from_env(values)
    clock = FakeClock()
    load = SteadyLoad(clock)
    orchestrator = MemoryOrchestrator(["127.0.0.1:1"], replicas=replicas)
    registry = CollectorRegistry()
    loop = ControlLoop(config, load, orchestrator, clock=clock, registry=registry, name="web")
    return loop, clock, load, orchestrator, registry


async def run_for(loop: ControlLoop, clock: FakeClock, seconds: float, step: float = 1.0) -> None:
    """Drive the real run() loop with the fake clock for `seconds`."""
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0)
    for _ in range(int(seconds / step)):
        await clock.advance(step)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_scales_up_to_cover_a_steady_load():
    loop, clock, load, orch, _ = make_loop()
    load.set(30)
    await run_for(loop, clock, 10)
    assert orch.replicas == 3
    assert orch.scale_calls == [3]  # once: no call while the count does not change


async def test_never_leaves_the_configured_bounds():
    loop, clock, load, orch, _ = make_loop(LB_MAX_REPLICAS="5")
    load.set(500)
    await run_for(loop, clock, 10)
    assert orch.replicas == 5
    assert max(orch.scale_calls) == 5
    assert "clamped to 1..5" in loop.status.last_decision["reason"]


async def test_does_not_scale_down_before_a_full_stable_window_after_start():
    loop, clock, load, orch, _ = make_loop(replicas=6)
    load.set(0)
    await run_for(loop, clock, 16)       # less than the 20 s stable window
    assert orch.scale_calls == []
    assert "stable window" in loop.status.last_decision["reason"]
    await run_for(loop, clock, 60)
    assert orch.replicas == 1            # idle: back to the minimum once warm


class AlwaysOne:
    """A careless user policy: the loop's own start-up rule must still hold."""

    name = "always-one"

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        return Decision(1, "always one"), state


async def test_the_start_up_rule_holds_whatever_the_policy_says():
    loop, clock, load, orch, _ = make_loop(replicas=6)
    loop.policy = AlwaysOne()
    await run_for(loop, clock, 16)
    assert orch.scale_calls == []
    assert "less than a stable window of data since start" in loop.status.last_decision["reason"]
    await run_for(loop, clock, 10)
    assert orch.scale_calls == [1]


async def test_brings_a_service_below_the_minimum_up_at_once():
    loop, clock, load, orch, _ = make_loop(replicas=0, LB_MIN_REPLICAS="2")
    await run_for(loop, clock, 3)
    assert orch.scale_calls == [2]


async def test_an_unreachable_engine_is_counted_backed_off_and_survived():
    loop, clock, load, orch, registry = make_loop()
    orch.failure = OrchestratorError("engine unreachable")
    load.set(40)
    await run_for(loop, clock, 30)
    assert orch.scale_calls == []
    failures = registry.get_sample_value("lb_orchestrator_errors_total", WEB)
    assert 2 <= failures < 15         # 2 s interval would give 15; backing off gives fewer
    assert loop.outage.ok is False

    orch.failure = None               # the engine is back: the loop resumes by itself
    await run_for(loop, clock, 40)
    assert orch.replicas == 4
    assert loop.outage.ok is True
    assert registry.get_sample_value("lb_replicas_current", WEB) == 4


async def test_each_decision_is_logged_with_inputs_and_reason(caplog):
    loop, clock, load, orch, registry = make_loop()
    load.set(25)
    with caplog.at_level(logging.INFO, logger="lb.control"):
        await run_for(loop, clock, 4)
    records = [r for r in caplog.records if r.getMessage() == "scale decision"]
    assert len(records) == 2
    fields = vars(records[0])
    assert fields["replicas"] == 1 and fields["desired"] == 3 and "25" in fields["reason"]
    assert fields["inputs"]["stable_inflight"] == pytest.approx(25, rel=0.01)
    status = loop.status_json()
    assert status["current"] == 3 and status["desired"] == 3
    assert status["last_decision"]["inputs"]["replicas"] == 3
    assert registry.get_sample_value("lb_scale_events_total", {"service": "web", "direction": "up"}) == 1


async def test_a_hanging_orchestrator_does_not_stall_the_loop():
    loop, clock, load, orch, registry = make_loop(LB_DOCKER_TIMEOUT="0.01")

    async def hang() -> int:
        await asyncio.Event().wait()
        return 1

    orch.current_replicas = hang  # type: ignore[method-assign]
    await loop.tick()               # returns: the wait is bounded by LB_DOCKER_TIMEOUT
    assert registry.get_sample_value("lb_orchestrator_errors_total", WEB) == 1


class Flaky:
    """A user policy that raises on its first call, then answers `answers` in turn."""

    name = "flaky"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Decision(answer, "flaky says so"), state


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), None])
async def test_a_policy_that_raises_or_overflows_keeps_the_replicas_and_the_loop_goes_on(bad, caplog):
    loop, clock, load, orch, registry = make_loop(replicas=2)
    loop.policy = Flaky(bad, bad, 4)
    with caplog.at_level(logging.ERROR, logger="lb.control"):
        await run_for(loop, clock, 10)
    failed = [r for r in caplog.records if r.getMessage().startswith("policy failed")]
    assert failed and failed[0].exc_info is not None        # logged with its traceback
    assert loop.policy_errors == len(failed) >= 3           # the raise and both unusable answers
    assert registry.get_sample_value("lb_policy_errors_total", WEB) == loop.policy_errors
    assert orch.scale_calls == [4]                          # kept 2 meanwhile, then went on deciding
    assert loop.status.current == 4
