"""The runner: spawns and stops users at a rate, follows a shape, ticks once a second.

Each tick appends a history row (locust's columns, then the balancer's), prints a progress line and, with an
admin URL, carries the latest sample of the balancer's /status. The final stats and failures files are
written at the end, when every number is known.

Nothing fails silently: an exception in a task or a hook is counted with its traceback (printed the first
time), a client call that was never awaited and an event loop blocked by a task are reported as errors, and
each of them makes the run exit non-zero, as locust does for exceptions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from loadtest.client import check_base_url
from loadtest.events import Events
from loadtest.events import events as default_events
from loadtest.shapes import LoadTestShape
from loadtest.stats import (
    EXCEPTIONS_CSV_COLUMNS,
    FAILURES_CSV_COLUMNS,
    HISTORY_CSV_COLUMNS,
    STATS_CSV_COLUMNS,
    HistoryWriter,
    RequestStats,
    StatsEntry,
    exceptions_rows,
    failures_rows,
    history_row,
    interval_between,
    stats_rows,
    write_csv,
)
from loadtest.user import HttpUser, User, filter_tasks_by_tags, run_user

log = logging.getLogger("loadtest")

# Extra history columns, always after locust's own so locust tools still find theirs in place.
LB_COLUMNS = ("Replicas Current", "Replicas Desired", "Backends", "Backends In Flight", "Last Decision",
              "Replicas Held", "Cold Starts", "Last Cold Start s")
SERVICES_COLUMNS = ("Timestamp", "Service", "Replicas Current", "Replicas Desired", "Replicas Held",
                    "Cold Starts", "Last Cold Start s", "Backends", "Backends In Flight", "Latency ms", "Error")
LOOP_LAG_LIMIT = 0.5  # seconds the event loop may be late before a blocked loop is reported


@dataclass
class RunOptions:
    host: str | None = None
    users: int = 1
    spawn_rate: float = 1.0
    run_time: float | None = None
    shape: LoadTestShape | None = None
    csv_prefix: str | None = None
    csv_full_history: bool = False
    html: str | None = None
    lb_admin: str | None = None
    plot: str | None = None
    plot_title: str = "Load test"
    seed: int | None = None
    timeout: float | None = 60.0
    stop_timeout: float = 5.0
    tick_interval: float = 1.0
    tags: list[str] | None = None
    exclude_tags: list[str] | None = None
    loop_lag_limit: float = LOOP_LAG_LIMIT
    progress: TextIO | None = field(default_factory=lambda: sys.stdout)
    errors: TextIO | None = field(default_factory=lambda: sys.stderr)
    parsed_options: argparse.Namespace | None = None


@dataclass
class ServiceSample:
    name: str
    current: int | None = None
    desired: int | None = None
    held: int | None = None
    cold_starts: int | None = None
    last_cold_start_s: float | None = None
    backends: int | None = None
    inflight: int | None = None
    latency_ms: float | None = None
    error: str = ""

    def columns(self) -> list[object]:
        return [self.name, *(_blank(v) for v in (self.current, self.desired, self.held, self.cold_starts,
                                                 self.last_cold_start_s, self.backends, self.inflight,
                                                 self.latency_ms)), self.error]


@dataclass
class LbSample:
    current: int | None = None
    desired: int | None = None
    backends: int | None = None
    inflight: int | None = None
    last_decision: str = ""
    held: int | None = None
    cold_starts: int | None = None
    last_cold_start_s: float | None = None
    services: list[ServiceSample] = field(default_factory=list)

    def columns(self) -> list[object]:
        return [_blank(self.current), _blank(self.desired), _blank(self.backends), _blank(self.inflight),
                self.last_decision, _blank(self.held), _blank(self.cold_starts), _blank(self.last_cold_start_s)]


def _blank(v: object) -> object:
    return "" if v is None else v


def _backends(backends: Any) -> tuple[int | None, int | None, float | None]:
    """(count, in flight, mean latency ms of those that report one) of a /status backends list."""
    if not isinstance(backends, list):
        return None, None, None
    entries = [b for b in backends if isinstance(b, dict)]
    inflight = sum(int(_int_or_none(b.get("inflight")) or 0) for b in entries)
    lat = [v for v in (_float_or_none(b.get("latency_ms")) for b in entries) if v is not None]
    return len(backends), inflight, (round(sum(lat) / len(lat), 3) if lat else None)


def parse_status(doc: dict[str, Any]) -> LbSample:
    """The balancer's GET /status: {"replicas": {"current", "desired", "held", "cold_starts",
    "last_cold_start_s", "last_decision"}, "backends": [...], "services": [{name, replicas, backends, error}]}.
    Every key is optional: a balancer without them leaves the columns empty."""
    replicas = doc.get("replicas") or {}
    if not isinstance(replicas, dict):
        replicas = {}
    count, inflight, _ = _backends(doc.get("backends"))
    decision = replicas.get("last_decision")
    services = []
    for svc in doc.get("services") or []:
        if not isinstance(svc, dict):
            continue
        rep_raw = svc.get("replicas")
        rep: dict[str, Any] = rep_raw if isinstance(rep_raw, dict) else {}
        n, infl, lat = _backends(svc.get("backends"))
        services.append(ServiceSample(
            name=str(svc.get("name") or "?"), current=_int_or_none(rep.get("current")),
            desired=_int_or_none(rep.get("desired")), held=_int_or_none(rep.get("held")),
            cold_starts=_int_or_none(rep.get("cold_starts")),
            last_cold_start_s=_float_or_none(rep.get("last_cold_start_s")), backends=n, inflight=infl,
            latency_ms=lat, error=str(svc.get("error") or "")))
    return LbSample(
        current=_int_or_none(replicas.get("current")),
        desired=_int_or_none(replicas.get("desired")),
        backends=count,
        inflight=inflight,
        last_decision=json.dumps(decision, sort_keys=True, separators=(",", ":")) if decision else "",
        held=_int_or_none(replicas.get("held")),
        cold_starts=_int_or_none(replicas.get("cold_starts")),
        last_cold_start_s=_float_or_none(replicas.get("last_cold_start_s")),
        services=services,
    )


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _float_or_none(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass
class RunResult:
    stats: RequestStats
    started: float
    duration: float
    history: list[list[object]]
    history_columns: list[str]
    user_count_peak: int
    environment: Environment | None = None
    services: list[list[object]] = field(default_factory=list)
    fine: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        return self.environment.problems if self.environment is not None else []


class Environment:
    """locust's `environment`: `events`, `runner`, `stats`, `host`, `parsed_options`, `process_exit_code`
    (a quitting listener may set it), `user_classes`, `shape_class`, `catch_exceptions`."""

    def __init__(self, user_classes: list[type[User]] | None = None, host: str | None = None,
                 events: Events | None = None, stats: RequestStats | None = None, timeout: float | None = 60.0,
                 parsed_options: argparse.Namespace | None = None, shape_class: LoadTestShape | None = None,
                 errors: TextIO | None = None) -> None:
        self.user_classes = list(user_classes or [])
        self.host = host
        self.events = events or default_events
        self.stats = stats or RequestStats()
        self.timeout = timeout
        self.parsed_options = parsed_options
        self.shape_class = shape_class
        self.runner: Runner | None = None
        self.web_ui = None  # no web UI here; locustfiles test `if environment.web_ui:`
        self.process_exit_code: int | None = None
        self.catch_exceptions = True
        self.problems: list[str] = []  # run-level errors (unawaited calls, blocked loop, no requests, ...)
        self._errors_out = errors
        for hook in self.events.hooks():
            hook.on_error = self._hook_error

    @property
    def _on_request(self) -> Any:
        """What the HTTP client calls per request: None (nothing to do) unless a locustfile listens."""
        hook = self.events.request
        others = [h for h in hook._handlers if h != self._record_request]
        if not others:
            return None
        return lambda **kw: hook.fire_others(self._record_request, **kw)

    def _record_request(self, request_type: str = "", name: str = "", response_time: float = 0.0,
                        response_length: int = 0, exception: Any = None, **_: Any) -> None:
        """events.request fired by a locustfile's own client (a custom User): into the stats, as locust."""
        self.stats.log_request(request_type, name, float(response_time or 0.0), int(response_length or 0))
        if exception is not None:
            self.stats.log_error(request_type, name, exception)

    def _print(self, text: str) -> None:
        if self._errors_out is not None:
            print(text, file=self._errors_out, flush=True)

    def _hook_error(self, exc: BaseException, tb: str) -> None:
        self.stats.log_exception(exc, tb)

    def _user_error(self, user: Any, where: Any, exc: BaseException) -> None:
        """A task or hook raised: counted by message and traceback, printed the first time (locust logs
        every one; once per distinct traceback keeps a failing task from flooding the output)."""
        tb = "".join(traceback.format_tb(exc.__traceback__))
        if self.stats.log_exception(exc, tb):
            name = getattr(where, "__qualname__", None) or type(where).__name__
            self._print(f"Error in {type(user).__name__} ({name}): {type(exc).__name__}: {exc}\n"
                        f"Traceback (most recent call last):\n{tb.rstrip()}")
        self.events.user_error.fire(user_instance=user, exception=exc, tb=exc.__traceback__)

    def problem(self, message: str, tb: str = "") -> None:
        """A run-level error: counted as an exception (it fails the run) and printed once."""
        if self.stats.log_exception(message, tb):
            self.problems.append(message)
            self._print(f"ERROR: {message}")

    def create_local_runner(self) -> Runner:
        self.runner = Runner(self.user_classes, self.host, self.stats, environment=self)
        return self.runner


class Runner:
    """Owns the users. set_users(n, rate, classes) moves toward n at `rate` users/s, up or down; `quit()`
    ends the run (locust's runner.quit()). `user_count`, `state`, `stats`, `environment` as in locust."""

    def __init__(self, user_classes: list[type[User]], host: str | None, stats: RequestStats,
                 seed: int | None = None, timeout: float | None = 60.0, stop_timeout: float = 5.0,
                 environment: Environment | None = None) -> None:
        if not user_classes:
            raise ValueError("no user classes to run")
        for cls in user_classes:
            target = host or cls.host
            if issubclass(cls, HttpUser):
                if not target:
                    raise ValueError(f"{cls.__name__} has no host: set `host` on it or pass --host")
                check_base_url(target)
        self.environment = environment or Environment(user_classes, host, stats=stats, timeout=timeout)
        self.environment.runner = self
        self.user_classes = user_classes
        self.host = host
        self.stats = stats
        self.seed = seed
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.state = "ready"
        self._users: list[tuple[asyncio.Task[None], User, type[User]]] = []
        self._leaving: set[asyncio.Task[None]] = set()
        self._spawned = 0
        self._target = 0
        self._rate = 1.0
        self._allowed: list[type[User]] = list(user_classes)
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self.quit_event = asyncio.Event()
        self._spawner: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.peak_users = 0
        self.died = 0       # users ended by an exception in on_start
        self._spawn_done = False

    @property
    def user_count(self) -> int:
        return len(self._users)

    @property
    def target_user_count(self) -> int:
        return self._target

    @property
    def exceptions(self) -> dict[tuple[str, str], int]:
        return self.stats.exceptions

    @property
    def errors(self) -> dict[tuple[str, str, str], list[float]]:
        return self.stats.errors

    @property
    def user_classes_count(self) -> dict[str, int]:
        counts: dict[str, int] = {c.__name__: 0 for c in self.user_classes}
        for _, _, cls in self._users:
            counts[cls.__name__] += 1
        return counts

    def quit(self) -> None:
        """End the run now (from a listener or a task), as locust's runner.quit()."""
        self.quit_event.set()

    def stop(self) -> None:
        self.quit_event.set()

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Plain `def` tasks run here, one thread per user at most; threads are made only when used.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=max(512, 2 * self._target + 8),
                                                thread_name_prefix="loadtest-user")
        return self._executor

    def set_users(self, target: int, spawn_rate: float, user_classes: list[type[User]] | None = None) -> None:
        self._target = max(0, int(target))
        self._rate = max(float(spawn_rate), 0.001)
        if user_classes is not None:
            wanted = [c for c in self.user_classes if c in user_classes] or list(user_classes)
            if wanted != self._allowed:
                self._allowed = wanted
                for entry in list(self._users):
                    if entry[2] not in wanted:   # a shape's tick changed the classes: those users leave
                        self._retire_entry(entry)
        self._spawn_done = False
        self.state = "spawning"
        self._changed.set()
        if self._spawner is None:
            self._spawner = asyncio.get_running_loop().create_task(self._adjust())

    async def all_users_gone(self) -> None:
        """Resolves when users that stopped by themselves (StopUser, on_start errors) have left none running.
        Not when a shape asks for 0 users: a ramp from 0 starts that way."""
        await self._idle.wait()

    def _capacity(self) -> float:
        """How many users the classes allow: with only fixed_count classes, their sum (as locust)."""
        if all(getattr(c, "fixed_count", 0) for c in self._allowed):
            return sum(c.fixed_count for c in self._allowed)
        return math.inf

    async def _adjust(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            target = int(min(self._target, self._capacity()))
            diff = target - len(self._users)
            if diff == 0:
                if not self._spawn_done:
                    self._spawn_done = True
                    self.state = "running"
                    self.environment.events.spawning_complete.fire(user_count=len(self._users))
                self._changed.clear()
                await self._changed.wait()
                continue
            # Batches of users at most every 50 ms, so high rates cost few wake-ups and low rates stay exact.
            batch = max(1, round(self._rate * 0.05))
            n = min(abs(diff), batch)
            for _ in range(n):
                self._spawn(loop) if diff > 0 else self._retire()
            self.peak_users = max(self.peak_users, len(self._users))
            if abs(diff) > n:
                await asyncio.sleep(n / self._rate)

    def _pick_class(self) -> type[User]:
        """fixed_count classes first, up to their count; then the others by `weight`, the most under-served
        one first (deterministic, like locust's dispatch)."""
        counts: dict[type[User], int] = {c: 0 for c in self.user_classes}
        for _, _, cls in self._users:
            counts[cls] = counts.get(cls, 0) + 1
        allowed = self._allowed
        for c in allowed:
            if c.fixed_count and counts[c] < c.fixed_count:
                return c
        weighted = [c for c in allowed if not c.fixed_count] or allowed
        return min(weighted, key=lambda c: (counts[c] / max(c.weight, 1e-9), allowed.index(c)))

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        cls = self._pick_class()
        rng = random.Random(self.seed * 1_000_003 + self._spawned) if self.seed is not None else random.Random()
        self._spawned += 1
        user = cls(self.environment)
        user.random = rng
        user._executor = _LazyExecutor(self)  # type: ignore[assignment]
        task = loop.create_task(run_user(user))
        entry = (task, user, cls)
        self._users.append(entry)
        task.add_done_callback(lambda _t: self._on_user_done(entry))

    def _on_user_done(self, entry: tuple[asyncio.Task[None], User, type[User]]) -> None:
        task = entry[0]
        self._leaving.discard(task)
        if entry in self._users:
            # Stopped by itself (StopUser, on_start error): it is not replaced, as in locust.
            self._users.remove(entry)
            self._target = max(0, self._target - 1)
            if getattr(entry[1], "_failed", False):
                self.died += 1
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                self.environment._user_error(entry[1], run_user, exc)
            if not self._users and self._target == 0:
                self._idle.set()
            self._changed.set()

    def _retire_entry(self, entry: tuple[asyncio.Task[None], User, type[User]]) -> None:
        self._users.remove(entry)
        task, user, _ = entry
        self._leaving.add(task)
        user._stopping = True
        # A waiting user leaves now; one inside a task finishes it first, so no request is cut mid-flight.
        if user._phase != "task":
            task.cancel()

    def _retire(self) -> None:
        self._retire_entry(self._users[-1])

    async def shutdown(self) -> None:
        self.state = "stopping"
        if self._spawner is not None:
            self._spawner.cancel()
            await asyncio.gather(self._spawner, return_exceptions=True)
            self._spawner = None
        while self._users:
            self._retire()
        leaving = list(self._leaving)
        if leaving:
            _, pending = await asyncio.wait(leaving, timeout=self.stop_timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.state = "stopped"


class _LazyExecutor:
    """Stands in for the runner's thread pool until a plain `def` task needs it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.runner.executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, **kw: Any) -> None:
        pass


async def sample_status(url: str, timeout: float) -> LbSample | None:
    """GET the balancer's /status once; None when it does not answer (the run goes on without it)."""
    import aiohttp  # the admin port is sampled once a second; aiohttp's cost does not matter there

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return None
                doc = await resp.json(content_type=None)
                return parse_status(doc) if isinstance(doc, dict) else None
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
        return None


def _status_url(admin: str) -> str:
    admin = admin.rstrip("/")
    if not admin.startswith(("http://", "https://")):
        admin = "http://" + admin
    return admin if admin.endswith("/status") else admin + "/status"


def progress_line(elapsed: float, users: int, interval_rps: float, fails_total: int, reqs_total: int,
                  p50: int, p95: int, lb: LbSample | None) -> str:
    pct = 100.0 * fails_total / reqs_total if reqs_total else 0.0
    line = (f"[{elapsed:6.0f}s] users={users:<5d} req/s={interval_rps:9.1f} failures={fails_total} ({pct:.2f}%) "
            f"p50={p50}ms p95={p95}ms")
    if lb is not None:
        cur = "?" if lb.current is None else lb.current
        des = "?" if lb.desired is None else lb.desired
        line += f" replicas={cur}/{des}"
        if lb.held:
            line += f" held={lb.held}"
        if lb.cold_starts:
            line += f" cold_starts={lb.cold_starts}"
        for svc in lb.services if len(lb.services) > 1 else ():
            line += f" {svc.name}={'?' if svc.current is None else svc.current}"
    return line


class _LoopWatch:
    """Catches the async port's traps while a run is going: a client call never awaited (the coroutine's
    RuntimeWarning, counted instead of lost) and an event loop blocked by a task (a lag monitor)."""

    def __init__(self, env: Environment, limit: float) -> None:
        self.env = env
        self.limit = limit
        self.max_lag = 0.0
        self._saved: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._saved = warnings.showwarning
        warnings.filterwarnings("always", message="coroutine .* was never awaited", category=RuntimeWarning)

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: Any = None) -> None:
            if issubclass(category, RuntimeWarning) and "was never awaited" in str(message):
                self.env.problem(f"{message} at {filename}:{lineno}: a client call without `await` sends "
                                 "nothing (write `await self.client.get(...)`)")
                return
            self._saved(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        step = 0.05
        while True:
            before = loop.time()
            await asyncio.sleep(step)
            lag = loop.time() - before - step
            self.max_lag = max(self.max_lag, lag)
            if lag > self.limit:
                self.env._print(f"the event loop was blocked for {lag:.1f} s")
                self.env.problem(f"the event loop was blocked for over {self.limit:g} s: a task made a blocking call "
                                 "(time.sleep, requests, a busy loop) inside an `async def`; use "
                                 "`await asyncio.sleep()` / the awaited client, or make the task a plain `def` "
                                 "(it then runs in a worker thread)")

    async def stop_lag(self) -> None:
        """The lag watch covers the load itself, not the hooks run around its end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def stop(self) -> None:
        await self.stop_lag()
        if self._saved is not None:
            warnings.showwarning = self._saved


def _entry_snapshot(entry: StatsEntry) -> StatsEntry:
    snap = StatsEntry(entry.method, entry.name)
    snap.extend(entry)
    return snap


async def run(user_classes: list[type[User]], opts: RunOptions, stop: asyncio.Event | None = None,
              environment: Environment | None = None) -> RunResult:
    """Run a load test to its end (run time, shape's None, every user stopped, runner.quit(), or `stop` set)
    and write its files."""
    env = environment or Environment(user_classes, opts.host, timeout=opts.timeout,
                                     parsed_options=opts.parsed_options, shape_class=opts.shape,
                                     errors=opts.errors)
    env.user_classes = list(user_classes)
    stats = env.stats
    if opts.tags is not None or opts.exclude_tags is not None:
        tags = set(opts.tags) if opts.tags is not None else None
        excl = set(opts.exclude_tags) if opts.exclude_tags is not None else None
        for cls in user_classes:
            filter_tasks_by_tags(cls, tags, excl)
    runner = env.runner or Runner(user_classes, opts.host, stats, seed=opts.seed, timeout=opts.timeout,
                                  stop_timeout=opts.stop_timeout, environment=env)
    loop = asyncio.get_running_loop()
    columns = [*HISTORY_CSV_COLUMNS, *(LB_COLUMNS if opts.lb_admin else ())]
    history: list[list[object]] = []
    services: list[list[object]] = []
    fine: dict[str, list[float | None]] = {"50%": [], "95%": []}
    writer = HistoryWriter(opts.csv_prefix + "_stats_history.csv", columns) if opts.csv_prefix else None
    latest: dict[str, LbSample | None] = {"lb": None}
    sampler: asyncio.Task[None] | None = None
    if opts.lb_admin:
        import aiohttp  # noqa: F401  imported now: a first import inside the run would stall the loop-lag watch
        sampler = loop.create_task(_sample_forever(_status_url(opts.lb_admin), latest, opts.tick_interval))
    watch = _LoopWatch(env, opts.loop_lag_limit)
    watch.start()
    env.events.request.add_listener(env._record_request)
    env.events.test_start.fire(environment=env)

    started_wall = time.time()
    stats.start_time = started_wall
    start = loop.time()
    shape = opts.shape

    def apply(tick: tuple[Any, ...]) -> None:
        classes = list(tick[2]) if len(tick) > 2 and tick[2] else None
        runner.set_users(int(tick[0]), float(tick[1]), classes)

    if shape is not None:
        shape.reset_time()
        shape.runner = runner
        first = shape.tick()
        if first is not None:
            apply(first)
        finished_by_shape = first is None
    else:
        runner.set_users(opts.users, opts.spawn_rate)
        finished_by_shape = False

    prev: StatsEntry | None = None
    prev_entries: dict[tuple[str, str], StatsEntry] = {}
    prev_t = start
    deadline = start + opts.run_time if opts.run_time else math.inf
    gone = loop.create_task(runner.all_users_gone())
    stop_waiter = loop.create_task((stop or asyncio.Event()).wait())
    quit_waiter = loop.create_task(runner.quit_event.wait())
    tick_no = 0
    try:
        while not finished_by_shape:
            tick_no += 1
            next_tick = min(start + tick_no * opts.tick_interval, deadline)
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.wait({gone, stop_waiter, quit_waiter}, timeout=delay,
                                   return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            total = stats.aggregated()
            interval = interval_between(prev, total, now - prev_t)
            lb = latest["lb"]
            stamp = time.time()
            if writer and opts.csv_full_history:
                # locust's --csv-full-history: a row per request name each tick, then the Aggregated one.
                for key in sorted(stats.entries):
                    entry = stats.entries[key]
                    iv = interval_between(prev_entries.get(key), entry, now - prev_t)
                    row = history_row(stamp, runner.user_count, iv, entry)
                    row[2], row[3] = entry.method, entry.name
                    if opts.lb_admin:
                        row += [""] * len(LB_COLUMNS)
                    writer.write(row)
                    prev_entries[key] = _entry_snapshot(entry)
            prev, prev_t = total, now
            row = history_row(stamp, runner.user_count, interval, total)
            if opts.lb_admin:
                row += (lb or LbSample()).columns()
                for svc in (lb.services if lb else []):
                    services.append([int(stamp), *svc.columns()])
            history.append(row)
            fine["50%"].append(interval.fine_percentile(0.5) if interval.requests else None)
            fine["95%"].append(interval.fine_percentile(0.95) if interval.requests else None)
            if writer:
                writer.write(row)
            if opts.progress is not None:
                print(progress_line(now - start, runner.user_count, interval.rps, total.num_failures,
                                    total.num_requests, interval.percentile(0.5), interval.percentile(0.95),
                                    lb if opts.lb_admin else None), file=opts.progress, flush=True)
            if gone.done():
                env._print(f"All users stopped by themselves after {now - start:.1f} s"
                           + (f" ({runner.died} ended by an exception in on_start)" if runner.died else "")
                           + ": ending the run")
                break
            if stop_waiter.done() or quit_waiter.done() or now >= deadline:
                break
            if shape is not None:
                nxt = shape.tick()
                if nxt is None:
                    break
                apply(nxt)
    finally:
        gone.cancel()
        stop_waiter.cancel()
        quit_waiter.cancel()
        await watch.stop_lag()
        env.events.test_stopping.fire(environment=env)
        await runner.shutdown()
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        duration = loop.time() - start
        env.events.test_stop.fire(environment=env)
        env.events.request.remove_listener(env._record_request)
        await watch.stop()
        if writer:
            writer.close()
    if stats.num_requests == 0:
        env.problem("no request was made during the run (check the tasks: are they marked @task, and do they "
                    "await self.client?)")
    if opts.csv_prefix:
        write_csv(opts.csv_prefix + "_stats.csv", STATS_CSV_COLUMNS, stats_rows(stats, duration))
        write_csv(opts.csv_prefix + "_failures.csv", FAILURES_CSV_COLUMNS, failures_rows(stats))
        write_csv(opts.csv_prefix + "_exceptions.csv", EXCEPTIONS_CSV_COLUMNS, exceptions_rows(stats))
        if services:
            write_csv(opts.csv_prefix + "_services.csv", SERVICES_COLUMNS, services)
    result = RunResult(stats, started_wall, duration, history, columns, runner.peak_users, env, services, fine)
    if opts.plot:
        from loadtest.plot import plot_history

        plot_history(columns, history, opts.plot, title=opts.plot_title, services=services, fine=fine)
    if opts.html:
        from loadtest.html import write_html

        write_html(opts.html, result, title=opts.plot_title)
    return result


async def _sample_forever(url: str, latest: dict[str, LbSample | None], every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        latest["lb"] = await sample_status(url, timeout=max(every * 0.9, 0.2))
        await asyncio.sleep(max(0.0, every - (loop.time() - began)))


def load_classes(objs: dict[str, Any]) -> tuple[list[type[User]], LoadTestShape | None]:
    """User classes and the shape a scenario module defines (locust's rules: no abstract ones)."""
    users = [v for v in objs.values()
             if isinstance(v, type) and issubclass(v, User) and not v.__dict__.get("abstract", False)]
    shapes = [v for v in objs.values() if isinstance(v, type) and issubclass(v, LoadTestShape)
              and not v.__dict__.get("abstract", False) and v.__module__ == objs.get("__name__")]
    if len(shapes) > 1:
        raise ValueError(f"more than one LoadTestShape in the scenario: {', '.join(s.__name__ for s in shapes)}")
    return users, (shapes[0]() if shapes else None)
