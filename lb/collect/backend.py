"""One backend's accounting: in-flight, peak-EWMA latency, counters, ejection state."""

from __future__ import annotations

import math

# States a backend is in; "slow_start" and "active" receive traffic.
SLOW_START = "slow_start"
ACTIVE = "active"
EJECTED = "ejected"
DRAINING = "draining"

_DECAY_S = 10.0          # Finagle's peak-EWMA time constant
_FLOOR_S = 0.0001        # keeps an idle backend's cost from reaching zero


class Backend:
    __slots__ = ("address", "host", "port", "state", "inflight", "ewma", "_ewma_at", "requests",
                 "errors", "consecutive_failures", "ejections", "ejected_until", "added_at",
                 "idle", "retired", "lost_to_retry")

    def __init__(self, address: str, now: float, initial_latency_s: float = 0.001) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.state = SLOW_START
        self.inflight = 0
        self.ewma = initial_latency_s
        self._ewma_at = now
        self.requests: dict[int, int] = {}   # status code -> count (502/503/504 include ours)
        self.errors = 0                      # connect failures, resets, timeouts
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.added_at = now
        self.idle: list = []                 # pooled idle upstream connections (lb.proxy.upstream)
        self.retired = False                 # removed from the pool; close connections as they free up
        self.lost_to_retry = 0               # requests it held when it broke, still owed a retry (Pool.try_retry)

    @property
    def answered_at(self) -> float:
        """When it last finished a request well (its latency's last sample), or when it was added."""
        return self._ewma_at

    @property
    def serving(self) -> bool:
        return self.state == ACTIVE or self.state == SLOW_START

    def observe_latency(self, now: float, seconds: float) -> None:
        """Peak EWMA: jump up to a slow sample at once, decay towards fast ones over _DECAY_S."""
        if seconds >= self.ewma:
            self.ewma = seconds
        else:
            dt = now - self._ewma_at
            # exp(-x) ~ 1 - x for the tiny gaps between requests under load; exact otherwise.
            w = 1.0 - dt / _DECAY_S if dt < 0.01 * _DECAY_S else math.exp(-max(dt, 0.0) / _DECAY_S)
            self.ewma = self.ewma * w + seconds * (1.0 - w)
        self._ewma_at = now

    def cost(self) -> float:
        return (self.inflight + 1) * (self.ewma if self.ewma > _FLOOR_S else _FLOOR_S)

    def requests_total(self) -> int:
        return sum(self.requests.values())
