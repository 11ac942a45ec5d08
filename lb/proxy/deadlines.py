"""Timeouts that all have the same length, kept in arrival order under a single loop timer.

With one fixed LB_UPSTREAM_TIMEOUT, arrival order is deadline order: adding and removing is a
dict insert and pop, far cheaper per request than a loop timer of its own.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Expiring(Protocol):
    def timed_out(self) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self._due: dict[Expiring, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: Expiring) -> None:
        # Callers add an item only when it is not in (a retry is discarded first), so no pop here.
        deadline = self.loop.time() + self.seconds
        self._due[item] = deadline
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._fire)

    def discard(self, item: Expiring) -> None:
        self._due.pop(item, None)

    def __len__(self) -> int:
        return len(self._due)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        due = self._due
        while due:
            item, deadline = next(iter(due.items()))
            if deadline > now:
                self._timer = self.loop.call_at(deadline, self._fire)
                return
            del due[item]
            item.timed_out()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
