"""Wait times and task weighting, with seeded random numbers so the statistics are reproducible."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loadtest import HttpUser, between, constant, constant_throughput, task
from loadtest import user as user_mod
from loadtest.runner import load_classes
from loadtest.shapes import LoadTestShape, StepShape


class Stub:
    """Stands in for a user where only `random` matters (wait_time functions take the user)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)


def test_between_stays_in_bounds_and_spreads() -> None:
    wait = between(0.5, 2.0)
    stub = Stub(1)
    samples = [wait(stub) for _ in range(5000)]
    assert all(0.5 <= s <= 2.0 for s in samples)
    assert abs(sum(samples) / len(samples) - 1.25) < 0.03
    # Both halves of the range are used about equally.
    low = sum(1 for s in samples if s < 1.25)
    assert 0.45 < low / len(samples) < 0.55


def test_between_is_reproducible_with_a_seed() -> None:
    wait = between(1, 3)
    assert [wait(Stub(5)) for _ in range(3)] == [wait(Stub(5)) for _ in range(3)]


def test_constant() -> None:
    assert constant(0.25)(Stub(0)) == 0.25


def test_constant_throughput_subtracts_the_task_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = {"t": 100.0}
    monkeypatch.setattr(user_mod.time, "monotonic", lambda: now["t"])
    wait = constant_throughput(2)  # one task every 0.5 s
    stub = Stub(0)
    assert wait(stub) == 0.5  # first task took no time that we know of
    now["t"] += 0.5 + 0.2  # the wait, then a task that took 0.2 s
    assert wait(stub) == pytest.approx(0.3)
    now["t"] += 0.3 + 0.9  # a task slower than the interval: no wait at all
    assert wait(stub) == 0.0


class Weighted(HttpUser):
    host = "http://127.0.0.1:1"

    @task(3)
    async def heavy(self) -> None: ...

    @task
    async def light(self) -> None: ...

    async def not_a_task(self) -> None: ...


def listed(user: HttpUser) -> None: ...


def keyed(user: HttpUser) -> None: ...


class FromList(HttpUser):
    tasks = [listed]


class FromDict(HttpUser):
    tasks = {listed: 1, keyed: 4}


def picks(cls: type[HttpUser], n: int = 20000, seed: int = 42) -> Counter[str]:
    rng = random.Random(seed)
    pool = cls.tasks
    return Counter(pool[int(rng.random() * len(pool))].__name__ for _ in range(n))


def test_task_weights_from_decorators() -> None:
    counts = picks(Weighted)
    assert set(counts) == {"heavy", "light"}
    assert counts["heavy"] / sum(counts.values()) == pytest.approx(0.75, abs=0.015)


def test_task_weights_from_a_dict_and_a_list() -> None:
    counts = picks(FromDict)
    assert counts["keyed"] / sum(counts.values()) == pytest.approx(0.8, abs=0.015)
    assert picks(FromList) == Counter({"listed": 20000})


def test_subclasses_inherit_and_add_tasks() -> None:
    class More(Weighted):
        @task(4)
        async def extra(self) -> None: ...

    counts = picks(More)
    assert counts["extra"] / sum(counts.values()) == pytest.approx(0.5, abs=0.015)


def test_load_classes_skips_abstract_users_and_imported_shapes() -> None:
    class Base(HttpUser):
        abstract = True

    class Real(Base):
        @task
        async def t(self) -> None: ...

    class MyShape(LoadTestShape):
        def tick(self) -> None:
            return None

    MyShape.__module__ = "scenario"
    users, shape = load_classes({"__name__": "scenario", "Base": Base, "Real": Real, "HttpUser": HttpUser,
                                 "StepShape": StepShape, "MyShape": MyShape})
    assert users == [Real]
    assert isinstance(shape, MyShape)
