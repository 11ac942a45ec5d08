"""The generator against a real aiohttp server on loopback: what the server saw is what the files say."""

from __future__ import annotations

import asyncio
import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from loadtest import HttpUser, ResponseError, StopUser, constant, task
from loadtest.runner import LB_COLUMNS, RunOptions, RunResult, run
from loadtest.stats import FAILURES_CSV_COLUMNS, HISTORY_CSV_COLUMNS, STATS_CSV_COLUMNS

pytestmark = pytest.mark.timeout(60)

# locust's own headers (locust/stats.py, as of locust 2.47), written out literally so a drift on either
# side is caught here.
LOCUST_PCTS = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")
LOCUST_STATS = ("Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
                "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
                *LOCUST_PCTS)
LOCUST_HISTORY = ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *LOCUST_PCTS,
                  "Total Request Count", "Total Failure Count", "Total Median Response Time",
                  "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
                  "Total Average Content Size")


class Server:
    """Counts every request by (method, path) and every connection it accepted."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        self.bodies: list[bytes] = []
        self.queries: list[str] = []
        self.peers: set[object] = set()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen[(request.method, request.path)] += 1
        self.queries.append(request.rel_url.raw_query_string)
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if request.can_read_body:
            self.bodies.append(await request.read())
        if request.path.startswith("/fail"):
            return web.Response(status=500, text="boom")
        return web.Response(text="hello")


@pytest.fixture
async def server(backend_factory) -> Server:
    srv = Server()
    srv.url = "http://" + (await backend_factory(srv.handle)).address
    return srv


async def run_raw(handle, user: type[HttpUser], **opts) -> RunResult:
    """Run `user` against a bare asyncio server whose connections `handle` serves."""
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        return await run([user], RunOptions(host=f"http://127.0.0.1:{port}", run_time=30, progress=None,
                                            **opts))
    finally:
        srv.close()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


ROUNDS = 20  # tasks per user, then the user stops itself: the run ends on its own, not on a timer


class Mixed(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.done = 0

    @task(3)
    async def index(self) -> None:
        await self.client.get(f"/page/{self.done}", name="/page/[n]")
        self._count()

    @task(1)
    async def failing(self) -> None:
        await self.client.get("/fail")
        self._count()

    @task(1)
    async def writes(self) -> None:
        await self.client.post("/items", data=b"x" * 10)
        await self.client.put("/items/1", json={"a": 1}, name="/items/[id]")
        await self.client.delete("/items/1", name="/items/[id]")
        self._count()

    def _count(self) -> None:
        self.done += 1
        if self.done >= ROUNDS:
            raise StopUser()


async def test_counts_failures_and_csv_match_what_the_server_saw(server: Server, tmp_path: Path) -> None:
    prefix = str(tmp_path / "run")
    result = await run([Mixed], RunOptions(host=server.url, users=4, spawn_rate=100, run_time=30, seed=7,
                                           csv_prefix=prefix, progress=None))

    served = sum(server.seen.values())
    assert result.stats.num_requests == served
    assert result.stats.num_failures == server.seen[("GET", "/fail")] > 0
    # One keep-alive connection per user.
    assert len(server.peers) == 4
    assert server.seen[("POST", "/items")] == sum(1 for b in server.bodies if b == b"x" * 10)
    assert b'{"a": 1}' in server.bodies

    header, rows = read_csv(Path(prefix + "_stats.csv"))
    assert tuple(header) == LOCUST_STATS == STATS_CSV_COLUMNS
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    page_hits = sum(n for (m, p), n in server.seen.items() if p.startswith("/page/"))
    assert int(by_name[("GET", "/page/[n]")]["Request Count"]) == page_hits
    assert int(by_name[("GET", "/fail")]["Failure Count"]) == server.seen[("GET", "/fail")]
    assert int(by_name[("PUT", "/items/[id]")]["Request Count"]) == server.seen[("PUT", "/items/1")]
    assert int(by_name[("DELETE", "/items/[id]")]["Request Count"]) == server.seen[("DELETE", "/items/1")]
    assert rows[-1]["Name"] == "Aggregated" and int(rows[-1]["Request Count"]) == served
    assert int(rows[-1]["Failure Count"]) == server.seen[("GET", "/fail")]

    header, fails = read_csv(Path(prefix + "_failures.csv"))
    assert tuple(header) == FAILURES_CSV_COLUMNS == (
        "Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")
    assert [(f["Method"], f["Name"], f["Error"], int(f["Occurrences"])) for f in fails] == [
        ("GET", "/fail", "BadStatusCode(code=500)", server.seen[("GET", "/fail")])]
    assert fails[0]["First Seen"] <= fails[0]["Last Seen"] and fails[0]["Last Seen"].endswith("Z")

    header, hist = read_csv(Path(prefix + "_stats_history.csv"))
    assert tuple(header) == LOCUST_HISTORY == HISTORY_CSV_COLUMNS
    assert hist and all(h["Name"] == "Aggregated" for h in hist)
    assert int(hist[-1]["Total Request Count"]) == served
    assert int(hist[-1]["Total Failure Count"]) == server.seen[("GET", "/fail")]


class Fussy(HttpUser):
    wait_time = constant(0)

    async def on_start(self) -> None:
        self.n = 0

    @task
    async def check(self) -> None:
        self.n += 1
        async with self.client.get("/fail", catch_response=True) as resp:
            if resp.status_code == 500:
                resp.success()  # this scenario expects the 500
        async with self.client.get("/ok", catch_response=True) as resp:
            if "goodbye" not in resp.text:
                resp.failure(f"wrong body ({resp.headers['Content-Type']})")
        async with self.client.get("/ok", catch_response=True, name="raised"):
            raise ResponseError("raised inside")
        if self.n >= 5:
            raise StopUser()


async def test_catch_response_lets_the_task_decide(server: Server) -> None:
    result = await run([Fussy], RunOptions(host=server.url, users=2, spawn_rate=100, run_time=30, progress=None))
    stats = result.stats
    assert stats.num_requests == sum(server.seen.values()) == 2 * 5 * 3
    assert stats.entries[("/fail", "GET")].num_failures == 0
    assert stats.entries[("/ok", "GET")].num_failures == 10
    assert stats.entries[("raised", "GET")].num_failures == 10
    assert {k[2] for k in stats.errors} == {"wrong body (text/plain; charset=utf-8)",
                                            "ResponseError('raised inside')"}


class Refused(HttpUser):
    wait_time = constant(0)

    @task
    async def hit(self) -> None:
        await self.client.get("/")
        raise StopUser()


async def test_refused_connections_are_failures_not_crashes(unused_tcp_port: int) -> None:
    result = await run([Refused], RunOptions(host=f"http://127.0.0.1:{unused_tcp_port}", users=3,
                                             spawn_rate=100, run_time=30, progress=None))
    assert result.stats.num_requests == 3
    assert result.stats.num_failures == 3
    [(method, name, error)] = result.stats.errors
    assert (method, name) == ("GET", "/") and "Connect" in error


class Steady(HttpUser):
    wait_time = constant(0.01)

    @task
    async def hit(self) -> None:
        await self.client.get("/")


async def test_lb_status_columns_and_plot(server: Server, backend_factory, tmp_path: Path) -> None:
    """The balancer's /status is sampled into columns after locust's, and the plot is a real image."""
    calls = {"n": 0}

    async def status(_: web.Request) -> web.Response:
        calls["n"] += 1
        desired = 1 if calls["n"] < 2 else 3
        return web.json_response({
            "replicas": {"current": min(calls["n"], 3), "desired": desired,
                         "last_decision": {"reason": "test", "desired": desired}},
            "backends": [{"address": "10.0.0.1:80", "inflight": 2, "latency_ms": 1.5, "state": "up"},
                         {"address": "10.0.0.2:80", "inflight": 1, "latency_ms": 1.0, "state": "up"}],
        })

    app = web.Application()
    app.router.add_get("/status", status)
    admin = await backend_factory(app=app)
    prefix = str(tmp_path / "lb")
    png = tmp_path / "run.png"
    await run([Steady], RunOptions(host=server.url, users=2, spawn_rate=100, run_time=1.5, tick_interval=0.25,
                                   csv_prefix=prefix, lb_admin=f"http://{admin.address}", plot=str(png),
                                   progress=None))

    header, hist = read_csv(Path(prefix + "_stats_history.csv"))
    assert tuple(header) == LOCUST_HISTORY + LB_COLUMNS
    sampled = [h for h in hist if h["Replicas Current"]]
    assert sampled, "no /status sample reached the history"
    assert {h["Backends"] for h in sampled} == {"2"}
    assert {h["Backends In Flight"] for h in sampled} == {"3"}
    assert json.loads(sampled[-1]["Last Decision"])["reason"] == "test"

    from PIL import Image

    from loadtest.plot import DPI, FIGSIZE

    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


class TwoRequests(HttpUser):
    wait_time = constant(0)
    method = "GET"

    @task
    async def twice(self) -> None:
        await self.client.request(self.method, "/a")
        await self.client.request(self.method, "/b")
        raise StopUser()


class TwoPosts(TwoRequests):
    method = "POST"


@pytest.mark.parametrize("user, failures", [(TwoRequests, 0), (TwoPosts, 1)])
async def test_a_reused_connection_closed_by_the_server_is_retried_only_when_idempotent(
        user: type[HttpUser], failures: int) -> None:
    """The server answers the first request on each connection and drops the connection on the second,
    as a server closing an idle keep-alive connection just as the client reuses it."""
    arrivals = {"n": 0}

    async def handle(reader, writer) -> None:  # type: ignore[no-untyped-def]
        served_here = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed its connection at the end of the run
                writer.close()
                return
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            arrivals["n"] += 1
            if served_here == 1:
                writer.close()
                return
            served_here += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    result = await run_raw(handle, user, users=1, spawn_rate=10)
    assert result.stats.num_requests == 2
    assert result.stats.num_failures == failures
    assert arrivals["n"] == 3 - failures  # the GET was sent again on a fresh connection; the POST was not


class OneRequest(HttpUser):
    wait_time = constant(0)

    @task
    async def once(self) -> None:
        await self.client.get("/a")
        raise StopUser()


async def test_a_server_that_closes_every_connection_at_once_is_a_failed_request_not_an_exception() -> None:
    """What a balancer task that is stopping does (it closes each new connection as it accepts it).
    Under uvloop, as `python -m loadtest` runs, the write to the connection closed meanwhile raised
    RuntimeError: the run counted a task exception for every try instead of a failed request."""
    uvloop = pytest.importorskip("uvloop")

    def close_at_once(reader, writer) -> None:  # type: ignore[no-untyped-def]
        writer.close()   # in the accept callback itself, as the balancer's connection_made does

    def scenario() -> RunResult:
        async def main() -> RunResult:
            return await run_raw(close_at_once, OneRequest, users=1, spawn_rate=10)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())

    for _ in range(5):
        result = await asyncio.to_thread(scenario)
        assert not result.stats.exceptions
        assert (result.stats.num_requests, result.stats.num_failures) == (1, 1)


async def test_a_shape_starting_at_zero_users_runs_to_its_end(server: Server) -> None:
    from loadtest.shapes import RampShape

    shape = RampShape(low=0, high=2, length=0.4, end=0.8)
    result = await run([Steady], RunOptions(host=server.url, shape=shape, tick_interval=0.1, progress=None))
    assert result.user_count_peak == 2
    assert result.stats.num_requests == sum(server.seen.values()) > 0
    assert result.history[0][1] == 0  # User Count of the first row: the ramp began with nobody


class Weighted(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.left = 400

    @task(3)
    async def often(self) -> None:
        await self.client.get("/often")
        self._tick()

    @task(1)
    async def rarely(self) -> None:
        await self.client.get("/rarely")
        self._tick()

    def _tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            raise StopUser()


async def test_task_weights_reach_the_server_and_a_seed_reproduces_the_run(server: Server) -> None:
    async def once() -> Counter[tuple[str, str]]:
        server.seen.clear()
        await run([Weighted], RunOptions(host=server.url, users=2, spawn_rate=100, run_time=30, seed=11,
                                         progress=None))
        return Counter(server.seen)

    first = await once()
    assert sum(first.values()) == 800
    assert first[("GET", "/often")] / 800 == pytest.approx(0.75, abs=0.05)
    assert await once() == first


class Once(HttpUser):
    wait_time = constant(0)

    @task
    async def once(self) -> None:
        resp = await self.client.get("/")
        assert resp.text == "until close", resp.text
        raise StopUser()


async def test_a_body_delimited_by_close_is_read_whole() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"close")
        writer.close()

    result = await run_raw(handle, Once, users=2, spawn_rate=100)
    assert (result.stats.num_requests, result.stats.num_failures) == (2, 0)
    assert not result.stats.exceptions


async def test_a_request_with_no_answer_fails_after_the_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client gives up and closes
        writer.close()

    result = await run_raw(handle, Refused, users=2, spawn_rate=100, timeout=0.2)
    assert (result.stats.num_requests, result.stats.num_failures) == (2, 2)
    [(_, _, error)] = result.stats.errors
    assert error == "TimeoutError('request timed out')"
    assert result.stats.entries[("/", "GET")].min_response_time >= 200  # type: ignore[operator]


class Querying(HttpUser):
    wait_time = constant(0)

    @task
    async def search(self) -> None:
        await self.client.get("/search", params={"q": "two words", "n": 3}, name="/search")
        await self.client.get("/search?page=2", params="sort=asc", timeout=5)
        raise StopUser()


async def test_params_become_the_query_string(server: Server) -> None:
    result = await run([Querying], RunOptions(host=server.url, users=1, spawn_rate=10, run_time=30, progress=None))
    assert server.queries == ["q=two+words&n=3", "page=2&sort=asc"]
    assert set(result.stats.entries) == {("/search", "GET"), ("/search?page=2&sort=asc", "GET")}


class Unsupported(HttpUser):
    wait_time = constant(0)

    @task
    async def upload(self) -> None:
        await self.client.post("/", files={"f": b"x"})


async def test_unknown_request_options_are_refused_not_ignored(server: Server) -> None:
    result = await run([Unsupported], RunOptions(host=server.url, users=1, spawn_rate=10, run_time=1,
                                                 progress=None, errors=None))
    assert not server.seen
    assert any("unsupported option(s) files" in msg for msg, _ in result.stats.exceptions)
