"""locust's scenario vocabulary on asyncio: HttpUser, @task, wait times.

A locustfile ports by making tasks `async def`, awaiting `self.client.*` calls, and importing from `loadtest`.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from loadtest.client import HttpSession
from loadtest.stats import RequestStats


def task(weight: int | Callable[..., Any] = 1) -> Any:
    """`@task` or `@task(3)`: mark a method as a task with a relative weight, as in locust."""
    if callable(weight):
        weight.locust_task_weight = 1  # type: ignore[attr-defined]
        return weight

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.locust_task_weight = weight  # type: ignore[attr-defined]
        return fn

    return mark


def _rng(user: Any) -> random.Random:
    return getattr(user, "random", None) or random._inst  # type: ignore[attr-defined]


def between(min_wait: float, max_wait: float) -> Callable[[Any], float]:
    """A wait drawn uniformly from [min_wait, max_wait] seconds after each task."""
    def wait_time(user: Any) -> float:
        return min_wait + (max_wait - min_wait) * _rng(user).random()
    return wait_time


def constant(wait: float) -> Callable[[Any], float]:
    def wait_time(user: Any) -> float:
        return wait
    return wait_time


def constant_throughput(task_runs_per_second: float) -> Callable[[Any], float]:
    """Wait so that each user runs at most `task_runs_per_second` tasks a second (time taken by the task
    counts toward the interval), as locust's constant_throughput does."""
    interval = 1.0 / task_runs_per_second

    def wait_time(user: Any) -> float:
        now = time.monotonic()
        last_run = getattr(user, "_ct_last_run", None)
        last_wait = getattr(user, "_ct_last_wait", 0.0)
        ran_for = 0.0 if last_run is None else now - last_run - last_wait
        wait = max(0.0, interval - ran_for)
        user._ct_last_run = now
        user._ct_last_wait = wait
        return wait
    return wait_time


def constant_pacing(wait: float) -> Callable[[Any], float]:
    return constant_throughput(1.0 / wait)


class StopUser(Exception):
    """Raise inside a task to stop this user, as in locust."""


class HttpUser:
    """Subclass it, set `host` and `wait_time`, and write `async def` methods marked `@task`.

    `tasks` may also be a list of callables (each taking the user) or a {callable: weight} dict, as in locust.
    `weight` picks how often this class is spawned relative to others; `abstract = True` hides a base class.
    """

    host: str | None = None
    wait_time: Callable[..., float] = constant(0)
    tasks: Sequence[Any] | dict[Any, int] = ()
    weight: int = 1
    abstract: bool = True
    _task_pool: tuple[Callable[..., Any], ...] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        cls._task_pool = _collect_tasks(cls)

    def __init__(self, stats: RequestStats, host: str | None = None, rng: random.Random | None = None,
                 timeout: float | None = 60.0) -> None:
        self.host = host or self.host
        if not self.host:
            raise ValueError(f"{type(self).__name__} has no host: set `host` or pass --host")
        self.random = rng or random.Random()
        self.client = HttpSession(self.host, stats, timeout=timeout)
        self.stats = stats

    def on_start(self) -> Any:
        """Called once before the first task (may be async)."""

    def on_stop(self) -> Any:
        """Called once when the user stops (may be async)."""


def _collect_tasks(cls: type) -> tuple[Callable[..., Any], ...]:
    """Expand tasks by weight into one tuple, so picking is one random index (locust does the same). Every
    entry is called as fn(user): methods taken from the class and `tasks` entries alike."""
    pool: list[Callable[..., Any]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        declared = klass.__dict__.get("tasks")
        if declared:
            items = declared.items() if isinstance(declared, dict) else (
                (t if isinstance(t, tuple) else (t, getattr(t, "locust_task_weight", 1))) for t in declared)
            for fn, weight in items:
                pool.extend([fn] * int(weight))
        for name, value in klass.__dict__.items():
            if name in seen:
                continue
            seen.add(name)
            weight = getattr(value, "locust_task_weight", None)
            if weight is not None and inspect.isfunction(value):
                pool.extend([value] * int(weight))
    return tuple(pool)


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def run_user(user: HttpUser, state: dict[str, Any]) -> None:
    """One user's life: on_start, then pick a task, run it, wait, until cancelled or told to stop.

    `state["phase"]` tells the runner whether the user is inside a task ("task") or waiting ("wait"), so a
    graceful stop lets an in-flight request finish but interrupts a wait at once.
    """
    stats = user.stats
    try:
        state["phase"] = "task"
        await maybe_await(user.on_start())
        pool = user._task_pool
        if not pool:
            raise ValueError(f"{type(user).__name__} has no tasks")
        rnd = user.random.random
        n = len(pool)
        while not state.get("stopping"):
            state["phase"] = "task"
            fn = pool[int(rnd() * n)]
            try:
                result = fn(user)
                if inspect.isawaitable(result):
                    await result
            except StopUser:
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # locust logs task exceptions and carries on; count them as failures
                stats.log_exception(exc)
            if state.get("stopping"):
                break
            state["phase"] = "wait"
            # A class attribute `wait_time = between(1, 2)` is a plain function, so it arrives bound to the user.
            wait = user.wait_time()  # type: ignore[call-arg]
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                # Yield even with no wait so other users and the ticker run.
                await asyncio.sleep(0)
    finally:
        state["phase"] = "stopped"
        try:
            await maybe_await(user.on_stop())
        finally:
            user.client.close()
