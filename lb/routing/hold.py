"""The hold queue: requests that wait for a route's first serving backend, instead of a 503.

At zero replicas (scale to zero), or while every backend of a route is draining or ejected, the
proxy hands the request here. The first one held wakes the route's control loop (it scales now,
not at its next tick) and makes discovery look at the engine every 100 ms. While anything is held,
this queue looks every 25 ms at:
- the pool: once it has a serving backend and the balancer's own TCP connection to one succeeds,
  every held request goes out, in arrival order, as an ordinary request (picking, accounting and
  retries as usual). Ready = running (healthy where the image has a HEALTHCHECK: the engine keeps
  the task `starting` until then) + connectable;
- the engine's word on the start: a task that failed, was rejected or cannot be scheduled fails
  every held request with 503 at once, and the next requests get 503 for a backoff (1 s doubling
  to 30 s) before a request is held again: no storm of engine calls;
- the clock: a request held LB_HOLD_TIMEOUT seconds gets 504; one whose client left is dropped.
Bounded: past LB_HOLD_MAX held requests the next one gets 503 with Retry-After at once.

A held request counts as in flight in the pool (Pool.hold_begin), so the control loop sees it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.clock import Clock
from lb.collect.backend import DRAINING

if TYPE_CHECKING:
    from lb.collect.pool import Pool

log = logging.getLogger("lb.hold")

LOOK_S = 0.025          # between looks at the pool, the clock and the engine's word while held
PROBE_S = 1.0           # longest wait for the balancer's own TCP connection to a new backend
MAX_BACKOFF_S = 30.0    # after failed starts, the longest pause before a request is held again
CLOCK_SKEW_S = 1.0      # engine task timestamps vs this clock: an error this much older still counts
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Waiter(Protocol):
    """A held request (lb.proxy.exchange.Exchange)."""

    finished: bool

    def start(self) -> None: ...        # go out as an ordinary request
    def unhold(self, status: int) -> None: ...   # answered by the balancer alone (503, 504)


class HoldQueue:
    def __init__(self, name: str, pool: Pool, clock: Clock, *, max_held: int, timeout: float,
                 probe_timeout: float = PROBE_S) -> None:
        self.name = name
        self.pool = pool
        self.clock = clock
        self.max_held = max_held
        self.timeout = timeout
        self.probe_timeout = min(probe_timeout, PROBE_S)
        self.waiters: deque[tuple[float, Waiter]] = deque()
        #: Called when a request is held with none before it (the control loop's and discovery's wake).
        self.on_first: list[Callable[[], None]] = []
        #: The engine's reason a start failed since a wall-clock time, or None (the orchestrator's).
        self.start_error: Callable[[float], str | None] | None = None
        #: Told when the pool first has a serving backend while requests are held (a measured cold start).
        self.on_serving: Callable[[float], None] | None = None
        #: Whether discovery has looked at the engine yet (None: no discovery, the pool is all there is).
        self.known: Callable[[], bool] | None = None
        self.held_total = 0
        self.released_total = 0
        self.timeouts_total = 0
        self.dropped_total = 0         # clients that went away while held
        self.rejected_total = 0        # 503 at once: queue full, or backing off after a failed start
        self.failed_total = 0          # 503 because the start failed
        self.cold_starts = 0           # released holds during which the service had no task running
        self.holds = 0                 # released holds of any kind (cold starts, backends ejected, ...)
        self.cold_start_failures = 0
        self.last_cold_start_s: float | None = None   # first held request -> release
        self.last_error: str | None = None
        self.backoff_until = 0.0
        self._failures = 0
        self._episode: float | None = None      # when the first request of this wait was held
        self._episode_wall = 0.0
        self._serving_seen = False
        self._cold = False             # this hold saw the engine report no task of the service running
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._hold_sum = 0.0
        self._wake = asyncio.Event()

    # --- the proxy's side ----------------------------------------------------------------------
    def hold(self, waiter: Waiter) -> bool:
        """Hold `waiter`; False when it must be answered 503 now (full, or backing off)."""
        now = self.clock.now()
        if len(self.waiters) >= self.max_held or now < self.backoff_until:
            self.rejected_total += 1
            return False
        first = not self.waiters
        if first and self._episode is None:
            self._episode, self._episode_wall, self._serving_seen = now, self.clock.wall(), False
            self._cold = False
        self.waiters.append((now, waiter))
        self.pool.hold_begin()
        self.held_total += 1
        self._wake.set()
        if first:
            for hook in self.on_first:
                hook()
        return True

    @property
    def held(self) -> int:
        return len(self.waiters)

    def retry_after(self) -> int:
        """Seconds a refused client should wait (Retry-After)."""
        return max(1, math.ceil(self.backoff_until - self.clock.now()))

    # --- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """While anything is held, look every LOOK_S; otherwise sleep until a request is held."""
        while True:
            if not self.waiters:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.step()
            await self.clock.sleep(LOOK_S)

    async def step(self) -> None:
        now = self.clock.now()
        self._drop_gone()
        while self.waiters and now - self.waiters[0][0] >= self.timeout:
            since, waiter = self.waiters.popleft()
            self._out(now, since)
            self.timeouts_total += 1
            if not waiter.finished:
                waiter.unhold(504)
        if not self.waiters:
            self._episode = None   # nobody left to serve: the next held request starts afresh
            return
        if self.start_error is not None:
            error = self.start_error(self._episode_wall - CLOCK_SKEW_S)
            if error:
                self.fail(error)
                return
        if not self._cold and (self.known is None or self.known()) \
                and all(b.state == DRAINING for b in self.pool.backends):
            # A cold start: the engine says no task runs (at zero, or its first task is starting).
            # Not one: every backend ejected, or a balancer that has not looked at the engine yet.
            self._cold = True
        if self.pool.ready_count() == 0:
            return
        if not self._serving_seen:
            self._serving_seen = True
            if self.on_serving is not None:
                self.on_serving(now)
        if await self._connectable():
            self.release()

    def _drop_gone(self) -> None:
        if not any(w.finished for _, w in self.waiters):
            return
        now = self.clock.now()
        kept: deque[tuple[float, Waiter]] = deque()
        for since, waiter in self.waiters:
            if waiter.finished:
                self._out(now, since)
                self.dropped_total += 1
            else:
                kept.append((since, waiter))
        self.waiters = kept

    def _out(self, now: float, since: float) -> None:
        self.pool.hold_end()
        held = now - since
        self._buckets[bisect.bisect_left(BUCKETS, held)] += 1
        self._hold_sum += held

    async def _connectable(self) -> bool:
        """The balancer's own TCP connection to a serving backend succeeds (any one will do)."""
        backends = [b for b in self.pool.backends if b.serving]

        async def probe(host: str, port: int) -> bool:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.probe_timeout)
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True

        results = await asyncio.gather(*(probe(b.host, b.port) for b in backends))
        return any(results)

    def release(self) -> None:
        """Every held request out, in arrival order, as ordinary requests."""
        now = self.clock.now()
        if self._episode is not None:
            seconds = round(now - self._episode, 3)
            self.holds += 1
            if self._cold:
                self.last_cold_start_s = seconds
                self.cold_starts += 1
            log.info("cold start served" if self._cold else "held requests released", extra={
                "service": self.name, "held": len(self.waiters), "seconds": seconds})
        self._episode = None
        self._failures = 0
        self.backoff_until = 0.0
        while self.waiters and self.pool.ready_count() > 0:
            since, waiter = self.waiters.popleft()
            self._out(now, since)
            self.released_total += 1
            if not waiter.finished:
                waiter.start()

    def fail(self, reason: str, status: int = 503) -> None:
        """The start failed (or the route went away): every held request gets `status` now."""
        now = self.clock.now()
        self._failures += 1
        self.cold_start_failures += 1
        self.last_error = reason
        backoff = min(2.0 ** (self._failures - 1), MAX_BACKOFF_S)
        self.backoff_until = now + backoff
        log.warning("cold start failed: held requests answered 503", extra={
            "service": self.name, "held": len(self.waiters), "reason": reason, "retry_in_s": backoff})
        waiters, self.waiters = self.waiters, deque()
        self._episode = None
        for since, waiter in waiters:
            self._out(now, since)
            self.failed_total += 1
            if not waiter.finished:
                waiter.unhold(status)

    def give_up(self, reason: str) -> None:
        """The route is gone: every held request gets 503 now (not counted as a failed start)."""
        now = self.clock.now()
        waiters, self.waiters = self.waiters, deque()
        self._episode = None
        if waiters:
            log.info("held requests answered 503", extra={"service": self.name, "held": len(waiters),
                                                          "reason": reason})
        for since, waiter in waiters:
            self._out(now, since)
            if not waiter.finished:
                waiter.unhold(503)

    def status(self) -> dict[str, Any]:
        """What /status shows under `replicas`, next to the control loop's figures."""
        return {"held": len(self.waiters), "cold_starts": self.cold_starts,
                "last_cold_start_s": self.last_cold_start_s, "holds": self.holds,
                "cold_start_failures": self.cold_start_failures,
                "last_cold_start_error": self.last_error, "hold_timeouts": self.timeouts_total,
                "hold_dropped": self.dropped_total, "hold_rejected": self.rejected_total}


class HoldCollector(Collector):
    """Every route's hold queue, one series per service (label `service`)."""

    def __init__(self, queues: Callable[[], Iterable[HoldQueue]]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        labels = ["service"]
        held = GaugeMetricFamily("lb_held_requests", "Requests held now, waiting for a ready backend", labels=labels)
        seconds = HistogramMetricFamily("lb_hold_seconds", "Time requests spent held", labels=labels)
        cold = CounterMetricFamily("lb_cold_starts", "Holds that ended in a release during which the engine "
                                   "reported no task of the service running (from zero, or its first task)",
                                   labels=labels)
        failures = CounterMetricFamily("lb_cold_start_failures", "Starts the engine said failed (held requests "
                                       "answered 503)", labels=labels)
        outcomes = CounterMetricFamily("lb_hold_outcomes", "Held or refused requests by outcome",
                                       labels=["service", "outcome"])
        for q in self.queues():
            held.add_metric([q.name], len(q.waiters))
            cumulative, total = [], 0
            for bound, n in zip((*BUCKETS, math.inf), q._buckets, strict=True):
                total += n
                cumulative.append(("+Inf" if bound == math.inf else f"{bound:g}", total))
            seconds.add_metric([q.name], cumulative, q._hold_sum)
            cold.add_metric([q.name], q.cold_starts)
            failures.add_metric([q.name], q.cold_start_failures)
            for outcome, n in (("released", q.released_total), ("timeout", q.timeouts_total),
                               ("dropped", q.dropped_total), ("rejected", q.rejected_total),
                               ("failed", q.failed_total)):
                outcomes.add_metric([q.name, outcome], n)
        yield from (held, seconds, cold, failures, outcomes)
