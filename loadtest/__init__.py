"""Locust-style load tests on asyncio: write a scenario the way locust users do, run it with `python -m loadtest`."""

from loadtest.client import Response, ResponseError
from loadtest.shapes import DailySineShape, LoadTestShape, RampShape, SpikeShape, StepShape
from loadtest.user import HttpUser, StopUser, between, constant, constant_pacing, constant_throughput, task

# A locustfile written for FastHttpUser ports with the same import change.
FastHttpUser = HttpUser

__all__ = [
    "DailySineShape", "FastHttpUser", "HttpUser", "LoadTestShape", "RampShape", "Response", "ResponseError",
    "SpikeShape", "StepShape", "StopUser", "between", "constant", "constant_pacing", "constant_throughput", "task",
]
