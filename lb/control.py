"""The control loop: collect -> decide -> act, every LB_SCALE_INTERVAL seconds.

It samples the pool's cumulative counters into sliding windows, builds a Snapshot, asks the policy,
clamps the answer to LB_MIN_REPLICAS..LB_MAX_REPLICAS and calls the orchestrator only when the count
changes. Engine trouble never reaches the data path: the loop logs, counts, backs off and tries again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from lb.clock import Clock, Waker
from lb.config import Config
from lb.orchestrators.base import Orchestrator, OrchestratorError
from lb.orchestrators.outage import Outage, bounded
from policies import Policy, Snapshot, make
from policies.settings import BY_NAME as SETTINGS_BY_NAME
from policies.windows import SlidingWindows

if TYPE_CHECKING:
    from lb.routing.hold import HoldQueue

log = logging.getLogger("lb.control")
T = TypeVar("T")

#: Longest pause between attempts while the engine keeps failing.
MAX_BACKOFF_S = 30.0
#: After the first held request wakes the loop: how long it lets a burst arrive before deciding,
#: so a burst of N at zero asks for ceil(N / target) at once rather than 1 and then more.
COALESCE_S = 0.05
#: Measured cold starts averaged into Snapshot.cold_start_s.
COLD_STARTS_KEPT = 5


@dataclass
class ReplicaStatus:
    """What the loop last decided; /status (under `replicas`) and /metrics read it."""

    current: int | None = None
    desired: int | None = None
    last_decision: dict[str, Any] | None = None
    decisions: int = 0
    scaled_up: int = 0
    scaled_down: int = 0


class LoadSource(Protocol):
    """What the loop reads from a route's pool (lb.collect.pool.Pool)."""

    def load_sample(self, now: float) -> Any: ...
    def ready_count(self) -> int: ...
    def latency_quantiles(self, window_s: float, qs: tuple[float, ...]) -> list[float | None]: ...


class ControlCollector(Collector):
    """Read at scrape time from the loops' status: one series per service (label `service`)."""

    def __init__(self, loops: Callable[[], Iterable[ControlLoop]]) -> None:
        self.loops = loops

    def collect(self) -> Iterator[Metric]:
        current = GaugeMetricFamily("lb_replicas_current", "Replicas the service is set to", labels=["service"])
        desired = GaugeMetricFamily("lb_replicas_desired", "Replicas the policy wants, after clamping",
                                    labels=["service"])
        decisions = CounterMetricFamily("lb_scale_decisions", "Decisions the control loop made", labels=["service"])
        events = CounterMetricFamily("lb_scale_events", "Times the service was scaled",
                                     labels=["service", "direction"])
        errors = CounterMetricFamily("lb_orchestrator_errors", "Failed calls to the orchestrator (Docker engine)",
                                     labels=["service"])
        policy_errors = CounterMetricFamily("lb_policy_errors", "Ticks whose policy raised or gave an unusable "
                                            "answer (the replica count was kept)", labels=["service"])
        for loop in self.loops():
            s, name = loop.status, loop.name
            if s.current is not None:
                current.add_metric([name], s.current)
            if s.desired is not None:
                desired.add_metric([name], s.desired)
            decisions.add_metric([name], s.decisions)
            events.add_metric([name, "up"], s.scaled_up)
            events.add_metric([name, "down"], s.scaled_down)
            errors.add_metric([name], loop.outage.errors_total)
            policy_errors.add_metric([name], loop.policy_errors)
        yield from (current, desired, decisions, events, errors, policy_errors)


class ControlLoop:
    def __init__(self, config: Config, pool: LoadSource, orchestrator: Orchestrator,
                 clock: Clock | None = None, registry: CollectorRegistry | None = None,
                 policy: Policy | None = None, name: str = "") -> None:
        self.config = config
        self.name = name or config.service
        self.pool = pool
        self.orchestrator = orchestrator
        self.clock = clock or Clock()
        self.policy = policy or make(config.policy, config.policy_settings())
        self.state = self.policy.initial_state()
        self.windows = SlidingWindows(config.stable_window, config.panic_window)
        self.status = ReplicaStatus()
        self.outage = Outage(self.clock, config.scale_interval, MAX_BACKOFF_S, log, "orchestrator")
        self.policy_errors = 0
        if registry is not None:
            registry.register(ControlCollector(lambda: (self,)))
        self._started_at: float | None = None
        #: The route's hold queue (requests waiting for a first ready backend), when it has one.
        self.hold: HoldQueue | None = None
        #: Open WebSockets (upgraded connections) to this service's backends: never idle while any is.
        self.open_streams: Callable[[], int] | None = None
        self._waker = Waker()
        self._scaled_from_zero_at: float | None = None
        self.cold_starts_measured: list[float] = []   # scale request -> a task serving, seconds

    @property
    def cold_start_s(self) -> float | None:
        """The measured cold start (average of the last few), None until one was measured."""
        kept = self.cold_starts_measured
        return round(sum(kept) / len(kept), 3) if kept else None

    def status_json(self) -> dict[str, Any]:
        out = {**asdict(self.status), "engine_ok": self.outage.ok, "errors": self.outage.errors_total,
               "policy_errors": self.policy_errors, "measured_cold_start_s": self.cold_start_s}
        if self.hold is not None:
            out.update(self.hold.status())
        return out

    def wake(self) -> None:
        """Decide now (a request was held at zero ready backends), unless the engine is failing."""
        if self.outage.ok:
            self._waker.wake()

    def served(self, now: float) -> None:
        """The pool has a serving backend again while requests are held: measure the cold start."""
        if self._scaled_from_zero_at is not None:
            seconds = now - self._scaled_from_zero_at
            self._scaled_from_zero_at = None
            self.cold_starts_measured = [*self.cold_starts_measured, seconds][-COLD_STARTS_KEPT:]
            log.info("cold start measured", extra={"service": self.name, "seconds": round(seconds, 3)})

    async def run(self) -> None:
        """Tick until cancelled. Each tick is bounded; a failing engine only stretches the pauses."""
        if self._started_at is None:
            self._started_at = self.clock.now()
        self._sample()
        while True:
            if await self._waker.sleep(self.clock, self.outage.pause()):
                await self.clock.sleep(COALESCE_S)
            await self.tick()

    def _sample(self) -> float:
        now = self.clock.now()
        sample = self.pool.load_sample(now)
        self.windows.observe(now, sample.inflight_seconds, sample.requests_total)
        return now

    async def tick(self) -> None:
        now = self._sample()
        if self._started_at is None:
            self._started_at = now
        try:
            current = await self._call(self.orchestrator.current_replicas())
        except OrchestratorError as exc:
            self.outage.failed(exc, action="read replicas")
            return

        snapshot = self.snapshot(now, current)
        try:
            decision, state = self.policy.decide(snapshot, self.state)
            desired, why = self._clamp(decision.replicas, current, now, snapshot)
            reason = decision.reason + (f"; {why}" if why else "")
            self.state = state
        except Exception as exc:
            # A user's policy that raises, or an answer that is no count (NaN, inf, overflow): keep
            # the replicas as they are for this tick, say so with the traceback, and go on.
            self.policy_errors += 1
            log.exception("policy failed; keeping the current replicas", extra={
                "service": self.name, "policy": self.config.policy, "replicas": current})
            desired, reason = current, f"policy error ({type(exc).__name__}: {exc}); kept {current}"
            if snapshot.held:   # held requests still get their replicas, or they would wait to a 504
                desired, why = self._zero_rules(current, "", current, False, snapshot)
                reason += f"; {why}" if why else ""

        scaled = False
        if desired != current and self.orchestrator.can_scale:
            try:
                await self._call(self.orchestrator.scale(desired))
                scaled = True
                if current == 0 or snapshot.ready_replicas == 0:
                    if desired > 0 and self._scaled_from_zero_at is None:
                        self._scaled_from_zero_at = now   # a cold start: measured when a task serves
                elif desired == 0:
                    self._scaled_from_zero_at = None
            except OrchestratorError as exc:
                self.outage.failed(exc, action=f"scale to {desired}")
                self._record(snapshot, current, desired, reason, scaled=False)
                return
        self.outage.recovered()
        self._record(snapshot, desired if scaled else current, desired, reason, scaled)

    def snapshot(self, now: float, replicas: int) -> Snapshot:
        p50, p95, p99 = self.pool.latency_quantiles(self.config.stable_window, (0.5, 0.95, 0.99))
        # WindowAverages' fields are named as the Snapshot's (as the simulator builds it too).
        held = int(getattr(self.pool, "held", 0))
        idle_s = getattr(self.pool, "idle_s", None)
        idle = float(idle_s(now)) if idle_s is not None else 0.0
        if self.open_streams is not None and self.open_streams():
            idle = 0.0   # a WebSocket is open: the service is in use
        return Snapshot(now=now, replicas=replicas, ready_replicas=self.pool.ready_count(),
                        p50_ms=p50, p95_ms=p95, p99_ms=p99, **vars(self.windows.averages(now)),
                        held=held, idle_s=idle, cold_start_s=self.cold_start_s)

    def _clamp(self, wanted: int, current: int, now: float,
               snapshot: Snapshot | None = None) -> tuple[int, str]:
        """Bounds, the start-up rule and the idle rule, whatever the policy said (a user's policy included)."""
        low, high = self.config.min_replicas, self.config.max_replicas
        desired = min(max(int(wanted), low), high)
        why = ""
        if desired != wanted:
            why = f"clamped to {low}..{high}"
        warm = now - (self._started_at or now) >= self.config.stable_window
        if snapshot is not None:
            desired, why = self._zero_rules(desired, why, current, warm, snapshot)
        # A balancer that just started knows too little to remove capacity (it may have restarted
        # in the middle of a peak). Bounds still win: above max is always brought down.
        if desired < current and not warm and current <= high:
            desired, why = current, f"holding {current}: less than a stable window of data since start"
        return desired, why

    def _zero_rules(self, desired: int, why: str, current: int, warm: bool,
                    snapshot: Snapshot) -> tuple[int, str]:
        """Held requests need replicas at once; zero only after LB_SCALE_TO_ZERO_AFTER idle seconds."""
        config = self.config
        high = config.max_replicas
        if snapshot.held:
            # The windows lag a burst that arrived at zero: held requests alone set a floor.
            floor = 1
            if config.policy in SETTINGS_BY_NAME["target_inflight"].used_by:
                floor = math.ceil(snapshot.held / config.target_inflight - 1e-9)
            floor = min(floor, high)
            if desired < floor:
                desired, why = floor, f"{snapshot.held} requests held: at least {floor}"
            return desired, why
        if config.min_replicas > 0:
            return desired, why
        if current == 0:
            # At zero every request is held: only held requests bring the service back up (the
            # windows still hold the traffic from before it went idle).
            if desired > 0:
                desired, why = 0, "at zero: no request waiting"
            return desired, why
        idle = snapshot.idle_s >= config.scale_to_zero_after
        if idle and warm:
            # The idle rule, whatever the policy wants: no request in flight, held, arrived or open.
            return 0, (f"idle {snapshot.idle_s:.0f} s >= LB_SCALE_TO_ZERO_AFTER "
                       f"{config.scale_to_zero_after:g} s: scaling to zero")
        if desired == 0:
            desired = 1
            why = (f"not zero: idle {snapshot.idle_s:.0f} s of {config.scale_to_zero_after:g} s" if warm
                   else "not zero: less than a stable window of data since start")
        return desired, why

    async def _call(self, call: Awaitable[T]) -> T:
        return await bounded(call, self.config.docker_timeout * 2, "orchestrator call")

    def _record(self, snapshot: Snapshot, current: int, desired: int, reason: str, scaled: bool) -> None:
        inputs = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(snapshot).items()}
        decision = {"at": round(self.clock.wall(), 3), "replicas": desired, "reason": reason,
                    "scaled": scaled, "inputs": inputs}
        status = self.status
        status.current, status.desired, status.last_decision = current, desired, decision
        status.decisions += 1
        if scaled and desired > snapshot.replicas:
            status.scaled_up += 1
        elif scaled:
            status.scaled_down += 1
        log.info("scale decision", extra={
            "service": self.name, "replicas": snapshot.replicas, "desired": desired, "scaled": scaled,
            "reason": reason, "inputs": inputs})
