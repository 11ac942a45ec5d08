"""Background tasks: an exception is logged with its traceback, counted, and the task starts again."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from lb.clock import FakeClock
from lb.supervise import FIRST_RESTART_S, Supervisor


async def test_a_failing_task_is_logged_counted_and_restarted(caplog):
    clock = FakeClock()
    supervisor = Supervisor(clock)
    registry = CollectorRegistry()
    registry.register(supervisor)
    runs = []
    forever = asyncio.Event()

    async def task() -> None:
        runs.append(clock.now())
        if len(runs) <= 2:
            raise ValueError("broken")
        await forever.wait()

    with caplog.at_level(logging.ERROR, logger="lb.supervise"):
        supervisor.start("control:web", task)
        for _ in range(16):
            await clock.advance(FIRST_RESTART_S / 2)
    assert len(runs) == 3                                  # started again after each failure
    assert runs[2] - runs[1] > runs[1] - runs[0]            # with a growing pause
    assert [r.task for r in caplog.records] == ["control:web", "control:web"]
    assert all(r.exc_info for r in caplog.records)
    assert registry.get_sample_value("lb_task_restarts_total", {"task": "control:web"}) == 2
    await supervisor.stop_all()
    assert not supervisor.tasks


async def test_a_task_that_swallows_a_cancel_is_still_stopped():
    supervisor = Supervisor()
    ticks = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if len(ticks) < 3:      # as asyncio.wait_for can on Python 3.11: the cancel is lost
                    ticks.append(1)
                    continue
                raise

    supervisor.start("discovery:web", stubborn)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(supervisor.stop_all(), 5)
    assert len(ticks) == 3 and not supervisor.tasks
