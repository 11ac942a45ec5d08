"""How a loop that calls the orchestrator lives through its failures.

Discovery and the control loop both call the engine on a timer. Both back off the same way while
it fails, say so once per outage (not once per try), say when it is back, and count the errors:
one mechanism, so an outage reads the same in both logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from lb.clock import Clock
from lb.orchestrators.base import OrchestratorError

T = TypeVar("T")


class Outage:
    """Consecutive failures: the pause before the next try, and the log lines of one outage."""

    def __init__(self, clock: Clock, interval: float, cap: float, log: logging.Logger, what: str) -> None:
        self.clock = clock
        self.interval = interval
        self.cap = max(cap, interval)   # backing off never means trying sooner than normally
        self.log = log
        self.what = what
        self.failures = 0               # consecutive, for the backoff
        self.errors_total = 0
        self.last_error = ""
        self.since: float | None = None

    @property
    def ok(self) -> bool:
        return self.since is None

    def pause(self) -> float:
        if not self.failures:
            return self.interval
        return min(self.interval * 2 ** self.failures, self.cap)

    def failed(self, exc: Exception, **context: object) -> None:
        self.errors_total += 1
        self.failures += 1
        self.last_error = str(exc)
        if self.since is None:
            self.since = self.clock.now()
            self.log.warning(f"{self.what} failing", extra={
                "error": self.last_error, "retry_in_s": round(self.pause(), 2), **context})
        else:
            self.log.debug(f"{self.what} still failing", extra={"error": self.last_error, "failures": self.failures})

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info(f"{self.what} recovered", extra={
                "failures": self.failures, "outage_s": round(self.clock.now() - self.since, 3)})
        self.since = None
        self.failures = 0


async def bounded(call: Awaitable[T], seconds: float, what: str) -> T:
    """Await an orchestrator call, guarding against one that never answers.

    The Swarm orchestrator bounds its own calls; this guards the loops against any that does not.
    """
    try:
        return await asyncio.wait_for(call, seconds)
    except TimeoutError:
        raise OrchestratorError(f"{what} timed out") from None
