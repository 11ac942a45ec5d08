"""Locust-style load tests on asyncio: write a scenario the way locust users do, run it with `python -m loadtest`."""

from loadtest.client import CatchResponseError, Response, ResponseError
from loadtest.events import EventHook, Events, events
from loadtest.exception import RescheduleTask, RescheduleTaskImmediately, StopTest
from loadtest.runner import Environment
from loadtest.shapes import DailySineShape, LoadTestShape, RampShape, SpikeShape, StepShape
from loadtest.user import (
    FastHttpUser,
    HttpUser,
    InterruptTaskSet,
    SequentialTaskSet,
    StopUser,
    TaskSet,
    User,
    between,
    constant,
    constant_pacing,
    constant_throughput,
    tag,
    task,
)

__all__ = [
    "CatchResponseError", "DailySineShape", "Environment", "EventHook", "Events", "FastHttpUser", "HttpUser",
    "InterruptTaskSet", "LoadTestShape", "RampShape", "RescheduleTask", "RescheduleTaskImmediately", "Response",
    "ResponseError", "SequentialTaskSet", "SpikeShape", "StepShape", "StopTest", "StopUser", "TaskSet", "User",
    "between", "constant", "constant_pacing", "constant_throughput", "events", "tag", "task",
]
