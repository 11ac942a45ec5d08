"""locust's scenario vocabulary on asyncio: User/HttpUser, TaskSet, SequentialTaskSet, @task, @tag, wait times.

A locustfile ports by making tasks `async def`, awaiting `self.client.*` calls, and importing from `loadtest`.
A task left as a plain `def` still works: it runs in a worker thread where `self.client` blocks, as locust's.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from loadtest.client import HttpSession
from loadtest.exception import (
    InterruptTaskSet,
    RescheduleTask,
    RescheduleTaskImmediately,
    StopTest,
    StopUser,
)

if TYPE_CHECKING:
    from loadtest.runner import Environment

log = logging.getLogger("loadtest")


def task(weight: int | Callable[..., Any] = 1) -> Any:
    """`@task` or `@task(3)`: mark a method (or a TaskSet class) as a task with a relative weight."""
    if callable(weight):
        weight.locust_task_weight = 1  # type: ignore[attr-defined]
        return weight

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.locust_task_weight = weight  # type: ignore[attr-defined]
        return fn

    return mark


def tag(*tags: str) -> Callable[[Any], Any]:
    """`@tag("a", "b")` on a task or a TaskSet: -T/--tags and -E/--exclude-tags select by it, as in locust."""
    if not tags or callable(tags[0]):
        raise ValueError("No tag name was supplied")

    def mark(decorated: Any) -> Any:
        if hasattr(decorated, "tasks"):
            decorated.tasks = [mark(t) for t in decorated.tasks]
        else:
            if "locust_tag_set" not in decorated.__dict__:
                decorated.locust_tag_set = set()
            decorated.locust_tag_set |= set(tags)
        return decorated

    return mark


def _rng(user: Any) -> random.Random:
    rng: random.Random | None = getattr(user, "random", None)
    return rng or random._inst  # type: ignore[attr-defined,unused-ignore]


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


def _collect_tasks(cls: type, ordered: bool = False) -> list[Any]:
    """locust's get_tasks_from_base_classes: base classes' tasks, then `tasks` (list, (fn, n) tuples or a
    {fn: weight} dict), then @task methods, each repeated by its weight. `ordered` (SequentialTaskSet) keeps
    declaration order between `tasks` and @task methods."""
    out: list[Any] = []
    for base in cls.__bases__:
        out += list(getattr(base, "tasks", None) or [])
    declared = cls.__dict__.get("tasks")

    def expand(items: Any) -> Iterable[Any]:
        if isinstance(items, dict):
            items = list(items.items())
        for t in items:
            if isinstance(t, tuple):
                fn, n = t
                yield from [fn] * int(n)
            else:
                yield t

    if not ordered and declared:
        out += list(expand(declared))
    for name, value in cls.__dict__.items():
        if name == "tasks" and ordered and declared:
            out += list(expand(declared))
            continue
        weight = getattr(value, "locust_task_weight", None) if name != "tasks" else None
        if weight is not None and (inspect.isfunction(value) or isinstance(value, type)):
            out += [value] * int(weight)
    return out


def filter_tasks_by_tags(holder: Any, tags: set[str] | None, exclude_tags: set[str] | None,
                         checked: dict[Any, bool] | None = None) -> None:
    """Keep only the tasks -T/-E select (locust's rule: with -T a task needs one of the tags; a TaskSet
    stays when any of its tasks does)."""
    checked = {} if checked is None else checked
    kept = []
    for t in holder.tasks:
        if t in checked:
            if checked[t]:
                kept.append(t)
            continue
        passing = True
        if hasattr(t, "tasks"):
            filter_tasks_by_tags(t, tags, exclude_tags, checked)
            passing = len(t.tasks) > 0
        else:
            mine = getattr(t, "locust_tag_set", None)
            if tags is not None:
                passing &= bool(mine and mine & tags)
            if exclude_tags is not None:
                passing &= not (mine and mine & exclude_tags)
        if passing:
            kept.append(t)
        checked[t] = passing
    holder.tasks = kept


_KIND_ASYNC, _KIND_SYNC, _KIND_SET = 0, 1, 2
_kinds: dict[Any, int] = {}


def _kind(t: Any) -> int:
    k = _kinds.get(t)
    if k is None:
        if isinstance(t, type) and issubclass(t, TaskSet):
            k = _KIND_SET
        elif inspect.iscoroutinefunction(t) or (callable(t) and inspect.iscoroutinefunction(type(t).__call__)):
            k = _KIND_ASYNC
        else:
            k = _KIND_SYNC
        try:
            _kinds[t] = k
        except TypeError:  # unhashable callable
            pass
    return k


async def call_maybe_threaded(user: User, fn: Callable[..., Any], *args: Any) -> Any:
    """Await an `async def` hook or task; run a plain `def` in the user's worker thread pool, where the client
    blocks. A plain function that returns an awaitable (a lambda around a client call) has it awaited."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    if getattr(fn, "__func__", None) in _NOOP_HOOKS:
        return None  # the base class's empty on_start/on_stop: no thread hop for nothing
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(user._executor, fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class TaskSet:
    """A set of tasks a user runs until one calls `self.interrupt()` (nested sets hand back to the parent).

    `tasks` / `@task` as on a user; `wait_time` (else the user's); `on_start` / `on_stop`; `self.user`,
    `self.parent`, `self.client`, `self.environment`, `self.random`."""

    tasks: list[Any] = []
    wait_time: Callable[..., float] | None = None
    _ordered = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.tasks = _collect_tasks(cls, ordered=cls._ordered)

    def __init__(self, parent: Any) -> None:
        self._task_queue: deque[Any] = deque()
        self._user: User = parent.user if isinstance(parent, TaskSet) else parent
        self._parent = parent
        self._time_start = time.time()

    @property
    def user(self) -> User:
        return self._user

    @property
    def parent(self) -> Any:
        return self._parent

    @property
    def client(self) -> Any:
        return getattr(self._user, "client", None)

    @property
    def environment(self) -> Environment:
        return self._user.environment

    @property
    def random(self) -> random.Random:
        return self._user.random

    def on_start(self) -> Any:
        """Called when the user starts running this set (may be async)."""

    def on_stop(self) -> Any:
        """Called when the user leaves this set (interrupt() or stopping; may be async)."""

    def interrupt(self, reschedule: bool = True) -> None:
        raise InterruptTaskSet(reschedule)

    def schedule_task(self, task_callable: Any, first: bool = False) -> None:
        if first:
            self._task_queue.appendleft(task_callable)
        else:
            self._task_queue.append(task_callable)

    def get_next_task(self) -> Any:
        if not self.tasks:
            raise Exception(f"No tasks defined on {type(self).__name__}: use the @task decorator or set "
                            "the 'tasks' attribute")
        return self.tasks[int(self._user.random.random() * len(self.tasks))]

    def _wait_seconds(self) -> float:
        own = type(self).__dict__.get("wait_time") or next(
            (k.__dict__["wait_time"] for k in type(self).__mro__[1:]
             if k is not TaskSet and "wait_time" in k.__dict__ and k.__dict__["wait_time"] is not None), None)
        if own is not None:
            return float(own(self))
        return float(self._user.wait_time())

    async def wait(self) -> None:
        user = self._user
        if user._stopping:
            raise StopUser()
        user._phase = "wait"
        seconds = self._wait_seconds()
        if seconds > 0:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(0)  # yield even with no wait so other users and the ticker run
        if user._stopping:
            raise StopUser()
        user._phase = "task"

    async def execute_task(self, t: Any) -> None:
        kind = _kind(t)
        if kind == _KIND_SET:
            await t(self).run()
            return
        target = self
        bound = getattr(t, "__self__", None)
        if kind == _KIND_ASYNC:
            if bound is not None:
                await t()
            else:
                await t(target)
            return
        if bound is not None:
            await call_maybe_threaded(self._user, t)
        else:
            await call_maybe_threaded(self._user, t, target)

    async def run(self) -> None:
        user = self._user
        try:
            await call_maybe_threaded(user, self.on_start)
        except InterruptTaskSet as e:
            raise (RescheduleTaskImmediately() if e.reschedule else RescheduleTask()) from e
        while True:
            try:
                if not self._task_queue:
                    self.schedule_task(self.get_next_task())
                try:
                    if user._stopping:
                        raise StopUser()
                    user._phase = "task"
                    await self.execute_task(self._task_queue.popleft())
                except RescheduleTaskImmediately:
                    pass
                except RescheduleTask:
                    await self.wait()
                else:
                    await self.wait()
            except InterruptTaskSet as e:
                await user._safe_hook(self.on_stop)
                raise (RescheduleTaskImmediately() if e.reschedule else RescheduleTask()) from e
            except (StopUser, StopTest, asyncio.CancelledError):
                await user._safe_hook(self.on_stop)
                raise
            except Exception as e:
                user._task_error(self, e)
                await self.wait()


class SequentialTaskSet(TaskSet):
    """Runs its tasks in declaration order, over and over (weights repeat a task in the sequence)."""

    _ordered = True

    def __init__(self, parent: Any) -> None:
        super().__init__(parent)
        self._cycle = itertools.cycle(self.tasks) if self.tasks else None

    def get_next_task(self) -> Any:
        if self._cycle is None:
            raise Exception(f"No tasks defined on {type(self).__name__}")
        return next(self._cycle)


class DefaultTaskSet(TaskSet):
    """The root set: runs the user's own tasks with the user as their argument."""

    def get_next_task(self) -> Any:
        tasks = self._user.tasks
        if not tasks:
            raise Exception(f"No tasks defined on {type(self._user).__name__}: use the @task decorator or set "
                            "the 'tasks' attribute (or mark it `abstract = True`)")
        return tasks[int(self._user.random.random() * len(tasks))]

    def _wait_seconds(self) -> float:
        return float(self._user.wait_time())

    async def execute_task(self, t: Any) -> None:
        kind = _kind(t)
        if kind == _KIND_ASYNC:
            await t(self._user)
        elif kind == _KIND_SET:
            await t(self._user).run()
        else:
            await call_maybe_threaded(self._user, t, self._user)

    async def run(self) -> None:
        """TaskSet.run's loop with the common case inlined (an `async def` task on the user, picked at
        random, then the user's wait): the generator's speed is this loop's speed. Same semantics."""
        user = self._user
        queue = self._task_queue
        rnd = user.random.random
        kinds = _kinds
        sleep = asyncio.sleep
        while True:
            try:
                try:
                    if user._stopping:
                        raise StopUser()
                    user._phase = "task"
                    if queue:
                        t = queue.popleft()
                    else:
                        tasks = user.tasks
                        if not tasks:
                            self.get_next_task()  # raises with locust's message
                        t = tasks[int(rnd() * len(tasks))]
                    if kinds.get(t) == _KIND_ASYNC:
                        await t(user)
                    else:
                        await self.execute_task(t)
                except RescheduleTaskImmediately:
                    continue
                except RescheduleTask:
                    pass
                # the wait (TaskSet.wait inlined)
                if user._stopping:
                    raise StopUser()
                user._phase = "wait"
                seconds = user.wait_time()
                await sleep(seconds if seconds > 0 else 0)
                if user._stopping:
                    raise StopUser()
            except InterruptTaskSet as e:
                raise (RescheduleTaskImmediately() if e.reschedule else RescheduleTask()) from e
            except (StopUser, StopTest, asyncio.CancelledError):
                raise
            except Exception as e:
                user._task_error(self, e)
                await self.wait()


class User:
    """A simulated user without a client of its own (locust's `User`); see HttpUser."""

    host: str | None = None
    wait_time: Callable[..., float] = constant(0)
    tasks: list[Any] = []
    weight: int = 1
    fixed_count: int = 0
    abstract: bool = True

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        cls.tasks = _collect_tasks(cls)

    def __init__(self, environment: Environment, host: str | None = None, rng: random.Random | None = None,
                 timeout: float | None = 60.0) -> None:
        if not hasattr(environment, "events"):
            # The earlier signature, User(stats, host=, rng=, timeout=): an environment around those stats.
            from loadtest.runner import Environment as _Env

            environment = _Env(host=host, stats=environment, timeout=timeout)  # type: ignore[arg-type]
        self.environment = environment
        self.random: random.Random = rng or random.Random()
        self._stopping = False
        self._phase = "start"
        self._executor: Executor | None = None
        self._taskset_instance: TaskSet | None = None

    @property
    def user(self) -> User:
        return self

    def context(self) -> dict[str, Any]:
        return {}

    def on_start(self) -> Any:
        """Called once before the first task (may be async)."""

    def on_stop(self) -> Any:
        """Called once when the user stops (may be async)."""

    def _task_error(self, where: Any, exc: BaseException) -> None:
        self.environment._user_error(self, where, exc)

    async def _safe_hook(self, hook: Callable[[], Any]) -> None:
        try:
            await call_maybe_threaded(self, hook)
        except (StopUser, InterruptTaskSet):
            pass
        except Exception as exc:
            self._task_error(hook, exc)

    def close(self) -> None:
        pass


class HttpUser(User):
    """Subclass it, set `host` and `wait_time`, and write `async def` methods marked `@task`.

    `tasks` may also be a list of callables (each taking the user) or TaskSet classes, or a {task: weight}
    dict, as in locust. `weight` / `fixed_count` pick how many of this class are spawned; `abstract = True`
    hides a base class. `insecure = True` turns https certificate checks off (self-signed test hosts)."""

    abstract = True
    insecure: bool = False

    def __init__(self, environment: Environment, host: str | None = None, rng: random.Random | None = None,
                 timeout: float | None = 60.0) -> None:
        super().__init__(environment, host, rng, timeout)
        environment = self.environment
        host = environment.host or self.host
        if not host:
            raise ValueError(f"{type(self).__name__} has no host: set `host` or pass --host")
        self.host = host
        self.client = HttpSession(host, environment.stats, timeout=environment.timeout,
                                  verify=not self.insecure, on_request=environment._on_request)

    def close(self) -> None:
        self.client.close()

    def rest(self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        """FastHttpUser.rest(): a catch_response request with JSON headers; `resp.js` is the parsed body
        (None when it is not JSON). `async with self.rest("POST", "/x", json={...}) as resp:`."""
        from loadtest.client import _Rest

        headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        return _Rest(self.client, method, url, {**kw, "headers": headers})


_NOOP_HOOKS = frozenset({User.on_start, User.on_stop, TaskSet.on_start, TaskSet.on_stop})

# FastHttpUser's locustfiles port with the same import change.
FastHttpUser = HttpUser


async def run_user(user: User) -> None:
    """One user's life: on_start, then its tasks (through nested task sets) until cancelled or told to stop.

    `user._phase` tells the runner whether the user is inside a task ("task") or waiting ("wait"), so a
    graceful stop lets an in-flight request finish but interrupts a wait at once. An exception in on_start
    ends the user and is reported with its traceback (locust logs it the same way)."""
    try:
        user._phase = "task"
        try:
            await call_maybe_threaded(user, user.on_start)
        except (StopUser, asyncio.CancelledError):
            raise
        except Exception as exc:
            user._task_error(user.on_start, exc)
            user._failed = True  # type: ignore[attr-defined]
            return
        ts = user._taskset_instance = DefaultTaskSet(user)
        while True:
            try:
                await ts.run()
            except (RescheduleTask, RescheduleTaskImmediately):
                continue
    except StopUser:
        pass
    except StopTest:
        runner = user.environment.runner
        if runner is not None:
            runner.quit()
    finally:
        user._phase = "stopped"
        try:
            await user._safe_hook(user.on_stop)
        finally:
            user.close()


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
