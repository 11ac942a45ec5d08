"""Prometheus metrics read from the pool at scrape time: the hot path only bumps plain counters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.collect.backend import ACTIVE, DRAINING, EJECTED, SLOW_START
from lb.collect.pool import Pool


class PoolCollector(Collector):
    """Every route's pool, one series per service (label `service`)."""

    def __init__(self, pools: Callable[[], Iterable[tuple[str, Pool]]]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("lb_requests", "Requests answered, by backend and status code",
                                       labels=["service", "backend", "code"])
        duration = HistogramMetricFamily("lb_request_duration_seconds",
                                         "Time from picking a backend to the end of its response",
                                         labels=["service"])
        inflight = GaugeMetricFamily("lb_backend_inflight", "Requests in flight per backend",
                                     labels=["service", "backend"])
        retries = CounterMetricFamily("lb_retries", "Requests retried on another backend", labels=["service"])
        overflow = CounterMetricFamily("lb_retry_overflow",
                                       "Lost requests answered 502, not retried, because the retry budget was spent",
                                       labels=["service"])
        ejections = CounterMetricFamily("lb_ejections", "Backends ejected after repeated failures",
                                        labels=["service"])
        backends = GaugeMetricFamily("lb_backends", "Backends in the pool, by state", labels=["service", "state"])
        for service, pool in self.pools():
            for backend in pool.backends:
                for code, n in sorted(backend.requests.items()):
                    requests.add_metric([service, backend.address, str(code)], n)
            for label, counts in (("retired", pool.retired_requests), ("none", pool.unrouted_requests)):
                for code, n in sorted(counts.items()):
                    requests.add_metric([service, label, str(code)], n)
            histogram = pool.histogram
            duration.add_metric([service], histogram.prom_cumulative(), histogram.prom_sum)
            for backend in pool.backends:
                inflight.add_metric([service, backend.address], backend.inflight)
            retries.add_metric([service], pool.retries_total)
            overflow.add_metric([service], pool.retries_refused)
            ejections.add_metric([service], pool.ejections_total)
            states = dict.fromkeys((ACTIVE, SLOW_START, EJECTED, DRAINING), 0)
            for backend in pool.backends:
                states[backend.state] += 1
            for state, n in states.items():
                backends.add_metric([service, state], n)
        yield from (requests, duration, inflight, retries, overflow, ejections, backends)
