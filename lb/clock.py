"""The one clock. Code that needs the time takes a Clock; tests pass a FakeClock."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Monotonic seconds, and a sleep that tests can replace."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock(Clock):
    """Time moves only when a test says so; sleepers wake when it passes their deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every task whose sleep ended run until it waits again."""
        self._now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._now]
        for _, future in due:
            if not future.done():
                future.set_result(None)
        for _ in range(10):  # let woken tasks reach their next await
            await asyncio.sleep(0)



class Waker:
    """A sleep on a clock that other code can cut short (`wake()`); one sleeper at a time.

    It cancels the sleeping task rather than racing a second one, so a sleep costs no extra task
    and starts at once (the fake clock sees it where it saw a plain sleep).
    """

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._pending = False

    def wake(self) -> None:
        self._pending = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def sleep(self, clock: Clock, seconds: float) -> bool:
        """Sleep `seconds`, or less when woken (before or during). True when woken."""
        if not self._pending:
            task = self._task = asyncio.current_task()
            try:
                await clock.sleep(seconds)
            except asyncio.CancelledError:
                # Ours (wake) unless someone else cancelled too: then it goes on up.
                if self._task is not None or not self._pending or task is None or task.uncancel() > 0:
                    raise
            finally:
                self._task = None
        woken, self._pending = self._pending, False
        return woken
