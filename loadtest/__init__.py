"""Locust-style load tests on asyncio: write a scenario the way locust users do, run it with `python -m loadtest`."""

from loadtest.client import Response, ResponseError
from loadtest.shapes import DailySineShape, LoadTestShape, RampShape, SpikeShape, StepShape
from loadtest.user import HttpUser, StopUser, between, constant, constant_pacing, constant_throughput, task

__all__ = [
    "DailySineShape", "HttpUser", "LoadTestShape", "RampShape", "Response", "ResponseError", "SpikeShape",
    "StepShape", "StopUser", "between", "constant", "constant_pacing", "constant_throughput", "task",
]
