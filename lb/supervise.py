"""Background tasks that cannot die quietly.

Every loop the balancer runs (discovery, each route's control loop, the sweep) is started through a
`Supervisor`: an exception is logged with its traceback, counted (`lb_task_restarts_total{task}`),
and the loop is started again after a pause that doubles up to a cap. Only cancellation ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.clock import Clock

log = logging.getLogger("lb.supervise")

#: First pause before a crashed task is started again; doubles up to MAX_RESTART_S.
FIRST_RESTART_S = 0.5
MAX_RESTART_S = 30.0
#: A task that ran this long before failing starts again after the first pause, not a longer one.
HEALTHY_RUN_S = 60.0
#: How often a stopped task is cancelled again, and for how long at most. On Python 3.11,
#: asyncio.wait_for can swallow a cancel that lands as its inner call completes (gh-86296): the loop
#: then goes on as if never stopped, so one cancel() is not enough.
RECANCEL_S = 0.2
STOP_TIMEOUT_S = 10.0


class Supervisor(Collector):
    """Starts named background loops, restarts them when they raise, and counts the restarts."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.restarts: dict[str, int] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `factory()` as task `name` (a name already running is cancelled first)."""
        self.stop(name)
        self.restarts.setdefault(name, 0)
        task = asyncio.create_task(self._run(name, factory), name=name)
        self.tasks[name] = task
        task.add_done_callback(lambda t: self.tasks.pop(name, None) if self.tasks.get(name) is t else None)
        return task

    def stop(self, name: str) -> asyncio.Task[None] | None:
        """Stop task `name` (cancelled until it ends, in the background)."""
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            ender = asyncio.get_running_loop().create_task(self._end([task]))
            self._stopping.add(ender)
            ender.add_done_callback(self._stopping.discard)
        return task

    async def stop_all(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        await self._end(tasks)
        await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _end(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel `tasks` until they have all ended (bounded: a task that will not end is logged)."""
        pending = {t for t in tasks if not t.done()}
        waited = 0.0
        while pending and waited < STOP_TIMEOUT_S:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
            waited += RECANCEL_S
        for task in pending:
            log.error("background task did not stop", extra={"task": task.get_name()})

    async def _run(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        pause = FIRST_RESTART_S
        while True:
            started = self.clock.now()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return          # stopped while between runs (a cancel that was swallowed)
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if self.clock.now() - started >= HEALTHY_RUN_S:
                    pause = FIRST_RESTART_S
                log.exception("background task failed; restarting", extra={
                    "task": name, "restart_in_s": pause, "restarts": self.restarts[name]})
                await self.clock.sleep(pause)
                pause = min(pause * 2, MAX_RESTART_S)
                continue
            log.warning("background task ended", extra={"task": name})
            return

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("lb_task_restarts", "Background tasks restarted after an exception",
                                     labels=["task"])
        for name, n in sorted(self.restarts.items()):
            family.add_metric([name], n)
        yield family
