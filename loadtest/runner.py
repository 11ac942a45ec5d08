"""The runner: spawns and stops users at a rate, follows a shape, ticks once a second.

Each tick appends a history row (locust's columns, then the balancer's), prints a progress line and, with an
admin URL, carries the latest sample of the balancer's /status. The final stats and failures files are
written at the end, when every number is known.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from loadtest.client import check_base_url
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
from loadtest.user import HttpUser, run_user

# Extra history columns, always after locust's own so locust tools still find theirs in place.
LB_COLUMNS = ("Replicas Current", "Replicas Desired", "Backends", "Backends In Flight", "Last Decision")


@dataclass
class RunOptions:
    host: str | None = None
    users: int = 1
    spawn_rate: float = 1.0
    run_time: float | None = None
    shape: LoadTestShape | None = None
    csv_prefix: str | None = None
    lb_admin: str | None = None
    plot: str | None = None
    plot_title: str = "Load test"
    seed: int | None = None
    timeout: float | None = 60.0
    stop_timeout: float = 5.0
    tick_interval: float = 1.0
    progress: TextIO | None = field(default_factory=lambda: sys.stdout)


@dataclass
class LbSample:
    current: int | None = None
    desired: int | None = None
    backends: int | None = None
    inflight: int | None = None
    last_decision: str = ""

    def columns(self) -> list[object]:
        return [_blank(self.current), _blank(self.desired), _blank(self.backends), _blank(self.inflight),
                self.last_decision]


def _blank(v: int | None) -> object:
    return "" if v is None else v


def parse_status(doc: dict[str, Any]) -> LbSample:
    """The balancer's GET /status: {"replicas": {"current", "desired", "last_decision"}, "backends": [...]}."""
    replicas = doc.get("replicas") or {}
    backends = doc.get("backends")
    decision = replicas.get("last_decision")
    inflight = None
    if isinstance(backends, list):
        inflight = sum(int(b.get("inflight") or 0) for b in backends if isinstance(b, dict))
    return LbSample(
        current=_int_or_none(replicas.get("current")),
        desired=_int_or_none(replicas.get("desired")),
        backends=len(backends) if isinstance(backends, list) else None,
        inflight=inflight,
        last_decision=json.dumps(decision, sort_keys=True, separators=(",", ":")) if decision else "",
    )


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
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


class Runner:
    """Owns the users. set_users(n, rate) moves toward n at `rate` users/s, up or down."""

    def __init__(self, user_classes: list[type[HttpUser]], host: str | None, stats: RequestStats,
                 seed: int | None = None, timeout: float | None = 60.0, stop_timeout: float = 5.0) -> None:
        if not user_classes:
            raise ValueError("no user classes to run")
        for cls in user_classes:
            if not (host or cls.host):
                raise ValueError(f"{cls.__name__} has no host: set `host` on it or pass --host")
            check_base_url(host or cls.host)  # type: ignore[arg-type]
        self.user_classes = user_classes
        self.host = host
        self.stats = stats
        self.seed = seed
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self._users: list[tuple[asyncio.Task[None], dict[str, Any], type[HttpUser]]] = []
        self._leaving: set[asyncio.Task[None]] = set()
        self._spawned = 0
        self._target = 0
        self._rate = 1.0
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._spawner: asyncio.Task[None] | None = None
        self.peak_users = 0

    @property
    def user_count(self) -> int:
        return len(self._users)

    def set_users(self, target: int, spawn_rate: float) -> None:
        self._target = max(0, int(target))
        self._rate = max(float(spawn_rate), 0.001)
        self._changed.set()
        if self._spawner is None:
            self._spawner = asyncio.get_running_loop().create_task(self._adjust())

    async def all_users_gone(self) -> None:
        """Resolves when users that stopped by themselves (StopUser) have left none running. Not when a
        shape asks for 0 users: a ramp from 0 starts that way."""
        await self._idle.wait()

    async def _adjust(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            diff = self._target - len(self._users)
            if diff == 0:
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

    def _pick_class(self) -> type[HttpUser]:
        # Deterministic proportional spread by `weight`, like locust's dispatch: the most under-served class.
        counts: dict[type[HttpUser], int] = {c: 0 for c in self.user_classes}
        for _, _, cls in self._users:
            counts[cls] += 1
        return min(self.user_classes, key=lambda c: (counts[c] / max(c.weight, 1e-9), self.user_classes.index(c)))

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        cls = self._pick_class()
        rng = random.Random(self.seed * 1_000_003 + self._spawned) if self.seed is not None else random.Random()
        self._spawned += 1
        user = cls(self.stats, host=self.host, rng=rng, timeout=self.timeout)
        state: dict[str, Any] = {"phase": "start"}
        task = loop.create_task(run_user(user, state))
        entry = (task, state, cls)
        self._users.append(entry)
        task.add_done_callback(lambda t, e=entry: self._on_user_done(e))

    def _on_user_done(self, entry: tuple[asyncio.Task[None], dict[str, Any], type[HttpUser]]) -> None:
        task = entry[0]
        self._leaving.discard(task)
        if entry in self._users:
            # Stopped by itself (StopUser, on_start error): it is not replaced, as in locust.
            self._users.remove(entry)
            self._target = max(0, self._target - 1)
            if not task.cancelled() and task.exception() is not None:
                self.stats.log_exception(task.exception())  # type: ignore[arg-type]
            if not self._users and self._target == 0:
                self._idle.set()
            self._changed.set()

    def _retire(self) -> None:
        task, state, _ = self._users.pop()
        self._leaving.add(task)
        state["stopping"] = True
        # A waiting user leaves now; one inside a task finishes it first, so no request is cut mid-flight.
        if state.get("phase") != "task":
            task.cancel()

    async def stop(self) -> None:
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


async def sample_status(url: str, timeout: float) -> LbSample | None:
    """GET the balancer's /status once; None when it does not answer (the run goes on without it)."""
    import aiohttp  # the admin port is sampled once a second; aiohttp's cost does not matter there

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return None
                return parse_status(await resp.json(content_type=None))
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
    return line


async def run(user_classes: list[type[HttpUser]], opts: RunOptions,
              stop: asyncio.Event | None = None) -> RunResult:
    """Run a load test to its end (run time, shape's None, every user stopped, or `stop` set) and write its
    files."""
    stats = RequestStats()
    runner = Runner(user_classes, opts.host, stats, seed=opts.seed, timeout=opts.timeout,
                    stop_timeout=opts.stop_timeout)
    loop = asyncio.get_running_loop()
    columns = [*HISTORY_CSV_COLUMNS, *(LB_COLUMNS if opts.lb_admin else ())]
    history: list[list[object]] = []
    writer = HistoryWriter(opts.csv_prefix + "_stats_history.csv", columns) if opts.csv_prefix else None
    latest: dict[str, LbSample | None] = {"lb": None}
    sampler: asyncio.Task[None] | None = None
    if opts.lb_admin:
        sampler = loop.create_task(_sample_forever(_status_url(opts.lb_admin), latest, opts.tick_interval))

    started_wall = time.time()
    start = loop.time()
    shape = opts.shape
    if shape is not None:
        shape.reset_time()
        first = shape.tick()
        if first is not None:
            runner.set_users(first[0], first[1])
        finished_by_shape = first is None
    else:
        runner.set_users(opts.users, opts.spawn_rate)
        finished_by_shape = False

    prev: StatsEntry | None = None
    prev_t = start
    deadline = start + opts.run_time if opts.run_time else math.inf
    gone = loop.create_task(runner.all_users_gone())
    stop_waiter = loop.create_task((stop or asyncio.Event()).wait())
    tick_no = 0
    try:
        while not finished_by_shape:
            tick_no += 1
            next_tick = min(start + tick_no * opts.tick_interval, deadline)
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.wait({gone, stop_waiter}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            total = stats.total()
            interval = interval_between(prev, total, now - prev_t)
            prev, prev_t = total, now
            lb = latest["lb"]
            row = history_row(time.time(), runner.user_count, interval, total)
            if opts.lb_admin:
                row += (lb or LbSample()).columns()
            history.append(row)
            if writer:
                writer.write(row)
            if opts.progress is not None:
                print(progress_line(now - start, runner.user_count, interval.rps, total.num_failures,
                                    total.num_requests, interval.percentile(0.5), interval.percentile(0.95),
                                    lb if opts.lb_admin else None), file=opts.progress, flush=True)
            if gone.done() or stop_waiter.done() or now >= deadline:
                break
            if shape is not None:
                nxt = shape.tick()
                if nxt is None:
                    break
                runner.set_users(nxt[0], nxt[1])
    finally:
        gone.cancel()
        stop_waiter.cancel()
        await runner.stop()
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        duration = loop.time() - start
        if writer:
            writer.close()
    if opts.csv_prefix:
        write_csv(opts.csv_prefix + "_stats.csv", STATS_CSV_COLUMNS, stats_rows(stats, duration))
        write_csv(opts.csv_prefix + "_failures.csv", FAILURES_CSV_COLUMNS, failures_rows(stats))
        write_csv(opts.csv_prefix + "_exceptions.csv", EXCEPTIONS_CSV_COLUMNS, exceptions_rows(stats))
    result = RunResult(stats, started_wall, duration, history, columns, runner.peak_users)
    if opts.plot:
        from loadtest.plot import plot_history

        plot_history(columns, history, opts.plot, title=opts.plot_title)
    return result


async def _sample_forever(url: str, latest: dict[str, LbSample | None], every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        latest["lb"] = await sample_status(url, timeout=max(every * 0.9, 0.2))
        await asyncio.sleep(max(0.0, every - (loop.time() - began)))


def load_classes(objs: dict[str, Any]) -> tuple[list[type[HttpUser]], LoadTestShape | None]:
    """User classes and the shape a scenario module defines (locust's rules: no abstract ones)."""
    users = [v for v in objs.values()
             if isinstance(v, type) and issubclass(v, HttpUser) and not v.__dict__.get("abstract", False)]
    shapes = [v for v in objs.values() if isinstance(v, type) and issubclass(v, LoadTestShape)
              and not v.__dict__.get("abstract", False) and v.__module__ == objs.get("__name__")]
    if len(shapes) > 1:
        raise ValueError(f"more than one LoadTestShape in the scenario: {', '.join(s.__name__ for s in shapes)}")
    return users, (shapes[0]() if shapes else None)

