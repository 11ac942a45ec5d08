"""The contract between what collects and what decides.

A policy is pure: `decide(snapshot, state)` -> `(Decision, new_state)`. It reads the time from the
snapshot, does no I/O and keeps nothing on itself between calls; everything it remembers is in the
state it returns, which the caller passes back next time (Knative's decider, as a function).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class PolicyError(ValueError):
    """An unknown policy name or bad policy settings; str(e) says what is expected."""


@dataclass(frozen=True)
class Snapshot:
    """What the balancer measured, as of `now` (seconds on the control loop's clock).

    Averages are totals across all backends (not per replica). A value is None when its window holds
    no data yet. `stable_coverage_s` says how many seconds of data the stable window really holds:
    a policy must not scale down on a window that is not yet full.
    """

    now: float
    replicas: int                     # what the orchestrator says the service is set to
    ready_replicas: int               # backends running and receiving traffic
    stable_inflight: float | None     # average concurrent requests over the stable window
    panic_inflight: float | None      # ... over the panic window
    stable_rps: float | None          # requests completed per second over the stable window
    panic_rps: float | None           # ... over the panic window
    p50_ms: float | None = None       # latency percentiles over the stable window
    p95_ms: float | None = None
    p99_ms: float | None = None
    stable_coverage_s: float = 0.0
    # Scale to zero and cold starts (issue 8):
    held: int = 0                     # requests waiting now for a first ready backend (also in the in-flight)
    idle_s: float = 0.0               # seconds since a request was last in flight or arrived
    cold_start_s: float | None = None  # measured scale request -> task serving; None until measured


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str


class Policy(Protocol):
    name: str

    def initial_state(self) -> Any: ...

    def decide(self, snapshot: Snapshot, state: Any) -> tuple[Decision, Any]: ...


Settings = Mapping[str, float]


def setting(settings: Settings, key: str, default: float, low: float = 0.0) -> float:
    """A number from the settings, or `default` when the key is absent; PolicyError when bad.

    Reading with defaults lets a user's settings name only what they change.
    """
    value = settings.get(key, default) if settings is not None else default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"setting {key}={value!r}: expects a number") from None
    if not number > low or number == float("inf"):
        raise PolicyError(f"setting {key}={value!r}: expects a number > {low:g}")
    return number
