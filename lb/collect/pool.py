"""The set of backends, how one is picked, and what the control loop samples.

Picking is power of two choices (Envoy's least-request) on cost = (in-flight + 1) * peak-EWMA
latency (Finagle), divided by a slow-start weight so a new backend is eased in, not flooded.
Backends that fail `eject_after` times in a row are ejected for `eject_base` seconds, doubling on
each repeat, but never the last serving one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lb.clock import Clock
from lb.collect.backend import ACTIVE, DRAINING, EJECTED, SLOW_START, Backend
from lb.collect.latency import RollingHistogram

if TYPE_CHECKING:
    from lb.routing.hold import HoldQueue

_MIN_WEIGHT = 0.05
_MAX_EJECT_DOUBLINGS = 6     # the longest ejection is eject_base * 64
_NEVER = float("inf")
_MIN_RETRIES = 3             # retries always allowed at once, whatever the budget (Envoy's floor)
STALL_LATENCIES = 10         # a backend silent this many times its latency (and LB_STALL_AFTER) has stalled


@dataclass(frozen=True)
class LoadSample:
    inflight_seconds: float   # time-integral of total in-flight requests
    requests_total: int       # requests completed, ever
    inflight: int             # in flight now


class Attempt:
    """One try of a request on one backend, from pick to end: its accounting ends exactly once.

    `Pool.attempt(backend)` begins it (in flight +1); then either `end(status)` (a finished request:
    counted, its latency or failure recorded) or `abandon()` (retried elsewhere). Whatever ends it
    first wins; later calls do nothing, so no path can end an attempt twice or leave one open.
    """

    __slots__ = ("pool", "backend", "started", "open")

    def __init__(self, pool: Pool, backend: Backend, started: float) -> None:
        self.pool = pool
        self.backend = backend
        self.started = started
        self.open = True

    def end(self, status: int, failed: bool | None = False) -> None:
        if self.open:
            self.open = False
            self.pool.end(self.backend, self.started, status, failed)

    def abandon(self, failed: bool = True) -> None:
        if self.open:
            self.open = False
            self.pool.abandon(self.backend, failed)


class Pool:
    def __init__(self, clock: Clock | None = None, *, slow_start_s: float = 10.0, eject_after: int = 5,
                 eject_base_s: float = 5.0, retry_budget: float = 0.2, rng: random.Random | None = None,
                 log: logging.Logger | None = None) -> None:
        self.clock = clock or Clock()
        self.log = log or logging.getLogger("lb.pool")
        self.slow_start_s = slow_start_s
        self.eject_after = eject_after
        self.eject_base_s = eject_base_s
        self.retry_budget = retry_budget
        self._rng = rng or random.Random()
        self.backends: list[Backend] = []
        self._by_address: dict[str, Backend] = {}
        self._serving: list[Backend] = []     # cached: backends that may get new requests
        self._next_change = _NEVER            # when an ejection ends or a slow start finishes
        self.histogram = RollingHistogram()
        # Totals for the control loop and /metrics.
        self.inflight = 0
        self._inflight_seconds = 0.0
        self.changed_at = self.clock.now()   # the last begin or end: the integral runs to here
        self.requests_total = 0
        self.retries_total = 0
        self.ejections_total = 0
        self.active_retries = 0
        self.retries_refused = 0              # lost requests answered 502 because the budget was spent
        self.retired_requests: dict[int, int] = {}    # status -> count of removed backends: totals never drop
        self.unrouted_requests: dict[int, int] = {}   # status -> count, answered without a backend
        self.active_at = self.clock.now()     # when the last request ended or was answered (idle since)
        self.held = 0                         # requests waiting for a first serving backend (also in `inflight`)
        self.hold: HoldQueue | None = None    # its lb.routing.hold.HoldQueue: it stays with the pool

    # --- membership ----------------------------------------------------------------------------
    def update(self, addresses: Iterable[str]) -> None:
        """Make the wanted set exactly `addresses`: new ones join in slow start, missing ones drain."""
        now = self.clock.now()
        wanted = list(dict.fromkeys(a.strip() for a in addresses if a.strip()))
        first = not self.backends
        for address in wanted:
            backend = self._by_address.get(address)
            if backend is None:
                backend = Backend(address, now, self._typical_latency())
                if first:
                    backend.state = ACTIVE   # the first set has nobody to protect from a flood
                self.backends.append(backend)
                self._by_address[address] = backend
            elif backend.state == DRAINING:
                backend.state = ACTIVE
        keep = set(wanted)
        for backend in self.backends:
            if backend.address not in keep and backend.state != DRAINING:
                backend.state = DRAINING
        self._reap(now)

    def _typical_latency(self) -> float:
        serving = [b.ewma for b in self.backends if b.serving]
        return sum(serving) / len(serving) if serving else 0.001

    def _reap(self, now: float) -> None:
        """Remove drained backends (closing their idle connections), then recompute who serves."""
        for backend in [b for b in self.backends if b.state == DRAINING and b.inflight == 0]:
            self.backends.remove(backend)
            del self._by_address[backend.address]
            backend.retired = True
            for code, n in backend.requests.items():
                self.retired_requests[code] = self.retired_requests.get(code, 0) + n
            idle, backend.idle = backend.idle, []   # close() takes a connection out of backend.idle
            for conn in idle:
                conn.close()
        self._refresh(now)

    def _refresh(self, now: float) -> None:
        """Recompute who serves: ejections that ended, slow starts that finished."""
        next_change = _NEVER
        for backend in self.backends:
            if backend.state == EJECTED:
                if now >= backend.ejected_until:
                    backend.state = ACTIVE
                    backend.consecutive_failures = 0
                    self.log.info("backend back from ejection", extra={"backend": backend.address})
                else:
                    next_change = min(next_change, backend.ejected_until)
            if backend.state == SLOW_START:
                ends = backend.added_at + self.slow_start_s
                if now >= ends:
                    backend.state = ACTIVE
                else:
                    next_change = min(next_change, ends)
        self._serving = [b for b in self.backends if b.serving]
        self._next_change = next_change

    def get(self, address: str) -> Backend | None:
        return self._by_address.get(address)

    def ready_count(self) -> int:
        """Backends receiving traffic (active or in slow start)."""
        return len(self._serving)

    # --- picking -------------------------------------------------------------------------------
    def pick(self, exclude: tuple[Backend, ...] = ()) -> Backend | None:
        now = 0.0
        if self._next_change != _NEVER:   # an ejection or slow start may have ended
            now = self.clock.now()
            if now >= self._next_change:
                self._refresh(now)
        candidates = self._serving
        if exclude:
            candidates = [b for b in candidates if b not in exclude]
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        random = self._rng.random        # random() is C; randrange() is Python and 3x slower
        i = int(random() * n)
        j = int(random() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if self._score(a, now) <= self._score(b, now) else b

    def _score(self, backend: Backend, now: float) -> float:
        cost = backend.cost()
        if backend.state == SLOW_START:
            weight = (now - backend.added_at) / self.slow_start_s
            cost /= weight if weight > _MIN_WEIGHT else _MIN_WEIGHT
        return cost

    # --- accounting (the proxy calls these per request) ----------------------------------------
    def _integrate(self, now: float) -> None:
        self._inflight_seconds += self.inflight * (now - self.changed_at)
        self.changed_at = now

    def begin(self, backend: Backend) -> float:
        """A request goes to `backend`; returns its start time for `end`."""
        now = self.clock.now()
        self._inflight_seconds += self.inflight * (now - self.changed_at)   # _integrate, inlined
        self.changed_at = now
        self.inflight += 1
        backend.inflight += 1
        return now

    def attempt(self, backend: Backend) -> Attempt:
        """Begin a request on `backend`: the handle that ends its accounting (see Attempt)."""
        return Attempt(self, backend, self.begin(backend))

    def end(self, backend: Backend, started: float, status: int, failed: bool | None = False) -> None:
        """The request finished with `status` (ours or the backend's); `failed` counts toward ejection.

        `failed=None`: the client's doing (it went away, stalled its body): neither a failure nor a
        latency sample, so a hostile client can make a healthy backend look neither broken nor slow.
        """
        now = self.clock.now()
        self._inflight_seconds += self.inflight * (now - self.changed_at)   # _integrate, inlined
        self.changed_at = now
        self.inflight -= 1
        backend.inflight -= 1
        self.active_at = now
        self.requests_total += 1
        requests = backend.requests
        requests[status] = requests.get(status, 0) + 1
        if failed is None:
            if backend.state == DRAINING and backend.inflight == 0:
                self._reap(now)
            return
        elapsed = now - started
        self.histogram.record(now, elapsed)
        if failed or 502 <= status <= 504:
            self.failure(backend, now)   # and no latency sample: a fast failure must not look cheap
        else:
            backend.observe_latency(now, elapsed)
            if backend.consecutive_failures:
                backend.consecutive_failures = 0
        if backend.state == DRAINING and backend.inflight == 0:
            self._reap(now)

    def failure(self, backend: Backend, now: float | None = None) -> None:
        """A connect failure, a reset or a timeout (or a gateway error the backend returned)."""
        now = self.clock.now() if now is None else now
        backend.errors += 1
        backend.consecutive_failures += 1
        if backend.consecutive_failures >= self.eject_after and backend.serving:
            if len(self._serving) > 1:   # never eject the last serving backend
                backend.state = EJECTED
                backend.ejected_until = now + self.eject_base_s * 2 ** min(backend.ejections, _MAX_EJECT_DOUBLINGS)
                backend.ejections += 1
                self.ejections_total += 1
                self.log.warning("backend ejected", extra={
                    "backend": backend.address, "failures": backend.consecutive_failures,
                    "seconds": round(backend.ejected_until - now, 3), "ejections": backend.ejections})
                self._refresh(now)

    def abandon(self, backend: Backend, failed: bool = True) -> None:
        """An attempt that will be retried elsewhere: not a finished request, maybe a failure."""
        now = self.clock.now()
        self._integrate(now)
        self.inflight -= 1
        backend.inflight -= 1
        if failed:
            self.failure(backend, now)
        if backend.state == DRAINING and backend.inflight == 0:
            self._reap(now)

    def unrouted(self, status: int) -> None:
        """A request answered by the proxy alone (no backend left to try): still a request."""
        self.active_at = self.clock.now()   # it arrived: the service is not idle
        self.requests_total += 1
        self.unrouted_requests[status] = self.unrouted_requests.get(status, 0) + 1

    def hold_begin(self) -> None:
        """A request is held (no serving backend): it counts as in flight for the control loop."""
        self._integrate(self.clock.now())
        self.inflight += 1
        self.held += 1

    def hold_end(self) -> None:
        """A held request was released (it begins an attempt next), failed, or its client left."""
        now = self.active_at = self.clock.now()
        self._integrate(now)
        self.inflight -= 1
        self.held -= 1

    def idle_s(self, now: float) -> float:
        """Seconds since a request was last in flight (held ones included) or arrived."""
        return 0.0 if self.inflight else max(0.0, now - self.active_at)

    def try_retry(self, backend: Backend) -> bool:
        """A request sent to `backend` was lost unanswered: may it go to another backend?

        Every request a backend held when it broke may, if the others still answer: a killed task
        resets all its connections at once, and that is the loss of one backend, not a retry storm.
        Beyond those, Envoy's budget: retries in progress stay under budget x requests in flight, so
        a failure of many backends cannot multiply the load on the rest.
        """
        if not backend.consecutive_failures:   # the first loss since it last answered
            alone = not any(b.consecutive_failures for b in self._serving if b is not backend)
            backend.lost_to_retry = backend.inflight if alone else 0
        if backend.lost_to_retry > 0:
            backend.lost_to_retry -= 1
        elif self.active_retries >= max(_MIN_RETRIES, self.retry_budget * self.inflight):
            self.retries_refused += 1
            return False
        self.active_retries += 1
        self.retries_total += 1
        return True

    def stalled(self, backend: Backend, now: float, since: float, stall_after: float) -> bool:
        """Is `backend` frozen for a request it has owed an answer since `since`?

        It has finished nothing for the stall time (`stall_after`, and STALL_LATENCIES x its own
        latency, so a slow backend is not taken for a frozen one) while another serving backend has
        finished something. A backend that never answered has no latency to judge by; a lone one has
        nowhere to send its requests: both are left to LB_UPSTREAM_TIMEOUT.
        """
        stall = max(stall_after, STALL_LATENCIES * backend.ewma)
        answered_at = backend.answered_at
        if now - since < stall or now - answered_at < stall or answered_at == backend.added_at:
            return False
        return any(now - b.answered_at < stall for b in self._serving if b is not backend)

    def retry_done(self) -> None:
        self.active_retries -= 1

    # --- what the control loop reads -----------------------------------------------------------
    def load_sample(self, now: float) -> LoadSample:
        self._integrate(max(now, self.changed_at))
        return LoadSample(self._inflight_seconds, self.requests_total, self.inflight)

    def latency_quantiles(self, window_s: float, qs: tuple[float, ...] | list[float] = (0.5, 0.95, 0.99)
                          ) -> list[float | None]:
        return self.histogram.quantiles(self.clock.now(), window_s, qs)

    def status(self) -> list[dict]:
        now = self.clock.now()
        if now >= self._next_change:
            self._refresh(now)
        return [{"address": b.address, "inflight": b.inflight, "latency_ms": round(b.ewma * 1000.0, 3),
                 "state": b.state, "requests": b.requests_total(), "errors": b.errors,
                 "ejections": b.ejections} for b in self.backends]
