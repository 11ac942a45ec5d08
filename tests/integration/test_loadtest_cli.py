"""`python -m loadtest` and `python -m loadtest.report` as a user runs them, against a loopback server."""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path

import pytest
from aiohttp import web

pytestmark = pytest.mark.timeout(90)
WEB = str(Path(__file__).resolve().parents[2] / "loadtest" / "scenarios" / "web.py")

SCENARIO = '''
from loadtest import HttpUser, LoadTestShape, constant, task


class Visitor(HttpUser):
    wait_time = constant(0.005)

    @task
    async def index(self):
        await self.client.get("/hello")


class Short(LoadTestShape):
    def tick(self):
        return (3, 100) if self.get_run_time() < 1.5 else None
'''


async def test_cli_runs_a_locustfile_with_its_shape_and_writes_every_file(backend_factory, tmp_path: Path) -> None:
    seen = {"n": 0}

    async def handle(_: web.Request) -> web.Response:
        seen["n"] += 1
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", handle)
    backend = await backend_factory(app=app)
    scenario = tmp_path / "locustfile.py"
    scenario.write_text(SCENARIO)
    prefix = tmp_path / "out" / "run"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "-f", str(scenario), "-H", f"http://{backend.address}",
        "--headless", "-t", "20s", "--csv", str(prefix), "--plot", str(tmp_path / "out" / "run.png"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "users=3" in text and "Aggregated" in text
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv"):
        assert Path(f"{prefix}{suffix}").is_file()
    assert (tmp_path / "out" / "run.png").stat().st_size > 0
    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert int(rows["Aggregated"]["Request Count"]) == int(rows["/hello"]["Request Count"]) == seen["n"] > 0

    report = await asyncio.create_subprocess_exec(sys.executable, "-m", "loadtest.report", str(prefix),
                                                  stdout=asyncio.subprocess.PIPE)
    rout, _ = await asyncio.wait_for(report.communicate(), timeout=30)
    assert report.returncode == 0
    assert f"Requests:            {seen['n']} (0 failed" in rout.decode()


@pytest.mark.parametrize("args, message", [
    (["-t", "soon"], "bad run time"),
    (["--shape", "zigzag"], "unknown shape"),
    (["-f", "/nonexistent/locustfile.py"], "no scenario file"),
    (["-H", "ftp://127.0.0.1:9"], "host must look like http(s)://"),
    (["-s", "soon"], "bad run time"),
    (["--frobnicate"], "unrecognized arguments"),
])
async def test_cli_rejects_bad_input_in_one_line(args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "-H", "http://127.0.0.1:9", "-f", WEB, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert message in err.decode() and "Traceback" not in err.decode()


async def test_without_h_each_user_class_goes_to_its_own_host(backend_factory, tmp_path: Path) -> None:
    hits = {"a": 0, "b": 0}

    def server(name: str) -> web.Application:
        async def handle(_: web.Request) -> web.Response:
            hits[name] += 1
            return web.Response(text=name)

        app = web.Application()
        app.router.add_get("/", handle)
        return app

    a = await backend_factory(app=server("a"))
    b = await backend_factory(app=server("b"))
    scenario = tmp_path / "two_hosts.py"
    scenario.write_text(f'''
from loadtest import HttpUser, constant, task


class A(HttpUser):
    host = "http://{a.address}"
    wait_time = constant(0.01)

    @task
    async def index(self):
        await self.client.get("/")


class B(A):
    host = "http://{b.address}"
''')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "-f", str(scenario), "-u", "4", "-r", "100", "-t", "1s",
        "--only-summary", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert hits["a"] > 0 and hits["b"] > 0


async def test_lb_admin_with_services_held_and_cold_starts(backend_factory, tmp_path: Path) -> None:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    calls = {"n": 0}

    async def status(_: web.Request) -> web.Response:
        calls["n"] += 1
        n = calls["n"]
        return web.json_response({
            "backends": [{"inflight": 1, "latency_ms": 4.0}],
            "replicas": {"current": 1, "desired": 1, "held": 2 if n == 1 else 0, "cold_starts": 1,
                         "last_cold_start_s": 1.25},
            "services": [
                {"name": "vote", "rule": "Host(`vote.localhost`)", "error": None,
                 "replicas": {"current": 1, "desired": 1, "held": 0, "cold_starts": 1, "last_cold_start_s": 1.25},
                 "backends": [{"inflight": 1, "latency_ms": 4.0}]},
                {"name": "result", "rule": "Host(`result.localhost`)", "error": None,
                 "replicas": {"current": 0, "desired": 0}, "backends": []},
            ]})

    app = web.Application()
    app.router.add_get("/hello", hello)
    target = await backend_factory(app=app)
    admin_app = web.Application()
    admin_app.router.add_get("/status", status)
    admin = await backend_factory(app=admin_app)
    scenario = tmp_path / "lf.py"
    scenario.write_text(SCENARIO.split("class Short")[0])
    prefix = tmp_path / "run"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "-f", str(scenario), "-H", f"http://{target.address}", "-u", "2",
        "-r", "20", "-t", "3s", "--csv", str(prefix), "--lb-admin", f"http://{admin.address}",
        "--plot", str(tmp_path / "run.png"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "Cold starts:" in text and "Service vote:" in text and "Service result:" in text
    with open(f"{prefix}_services.csv", newline="") as fh:
        names = {r["Service"] for r in csv.DictReader(fh)}
    assert names == {"vote", "result"}
    assert (tmp_path / "run.png").stat().st_size > 0
