"""Prometheus metrics read from the pool at scrape time: the hot path only bumps plain counters."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.collect.backend import ACTIVE, DRAINING, EJECTED, SLOW_START
from lb.collect.pool import Pool


class PoolCollector(Collector):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        requests = CounterMetricFamily("lb_requests", "Requests answered, by backend and status code",
                                       labels=["backend", "code"])
        for backend in pool.backends:
            for code, n in sorted(backend.requests.items()):
                requests.add_metric([backend.address, str(code)], n)
        for label, counts in (("retired", pool.retired_requests), ("none", pool.unrouted_requests)):
            for code, n in sorted(counts.items()):
                requests.add_metric([label, str(code)], n)
        yield requests

        histogram = pool.histogram
        duration = HistogramMetricFamily("lb_request_duration_seconds",
                                         "Time from picking a backend to the end of its response")
        duration.add_metric([], histogram.prom_cumulative(), histogram.prom_sum)
        yield duration

        inflight = GaugeMetricFamily("lb_backend_inflight", "Requests in flight per backend", labels=["backend"])
        for backend in pool.backends:
            inflight.add_metric([backend.address], backend.inflight)
        yield inflight

        yield CounterMetricFamily("lb_retries", "Requests retried on another backend", value=pool.retries_total)
        yield CounterMetricFamily("lb_ejections", "Backends ejected after repeated failures",
                                  value=pool.ejections_total)
        backends = GaugeMetricFamily("lb_backends", "Backends in the pool, by state", labels=["state"])
        states = dict.fromkeys((ACTIVE, SLOW_START, EJECTED, DRAINING), 0)
        for backend in pool.backends:
            states[backend.state] += 1
        for state, n in states.items():
            backends.add_metric([state], n)
        yield backends
