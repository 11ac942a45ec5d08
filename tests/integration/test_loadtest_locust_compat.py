"""locust's own examples, ported by the README's rule (import from loadtest, async def, await), run with
`python -m loadtest` against a loopback server: what the server saw, the exit code, and the files."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

LOCUST_PCTS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
LOCUST_STATS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
                "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
                *LOCUST_PCTS]
LOCUST_HISTORY = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *LOCUST_PCTS,
                  "Total Request Count", "Total Failure Count", "Total Median Response Time",
                  "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
                  "Total Average Content Size"]


class Site:
    """A small site: login sets a cookie that /hello requires; /redirect -> /target; /hdr needs X-Token."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.hosts: Counter[str] = Counter()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen[f"{request.method} {request.path}"] += 1
        self.hosts[request.headers.get("Host", "")] += 1
        if request.path == "/login":
            resp = web.Response(text="welcome")
            resp.set_cookie("session", "s3cret")
            return resp
        if request.path in ("/hello", "/world", "/item"):
            if request.cookies.get("session") != "s3cret":
                return web.Response(status=401, text="log in first")
            return web.Response(text="hi")
        if request.path == "/json":
            return web.json_response({"foo": 1})
        if request.path == "/redirect":
            raise web.HTTPFound("/target")
        if request.path == "/hdr":
            return web.Response(status=200 if request.headers.get("X-Token") == "t0k" else 403)
        return web.Response(text="ok")


@pytest.fixture
async def site(backend_factory) -> Site:
    s = Site()
    s.url = "http://" + (await backend_factory(s.handle)).address
    return s


async def loadtest(tmp_path: Path, locustfile: str, *args: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> tuple[int, str, str]:
    path = tmp_path / "locustfile.py"
    path.write_text(textwrap.dedent(locustfile))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", *args, cwd=str(cwd or tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


QUICKSTART = """
    from loadtest import HttpUser, task, between

    class QuickstartUser(HttpUser):
        wait_time = between(0.01, 0.02)

        @task
        async def hello_world(self):
            await self.client.get("/hello")
            await self.client.get("/world")

        @task(3)
        async def view_items(self):
            for item_id in range(3):
                await self.client.get(f"/item?id={item_id}", name="/item")

        async def on_start(self):
            await self.client.post("/login", json={"username": "foo", "password": "bar"})
"""


async def test_quickstart_logs_in_once_per_user_and_keeps_the_session(site: Site, tmp_path: Path) -> None:
    # No -f: ./locustfile.py, as locust.
    code, out, err = await loadtest(tmp_path, QUICKSTART, "-H", site.url, "-u", "3", "-r", "30", "-t", "2s",
                                    "--headless", "--csv", "run")
    assert code == 0, err
    assert site.seen["POST /login"] == 3
    assert site.seen["GET /hello"] > 0 and site.seen["GET /item"] > 0
    with open(tmp_path / "run_failures.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]]
    with open(tmp_path / "run_stats.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == LOCUST_STATS
    with open(tmp_path / "run_stats_history.csv", newline="") as fh:
        assert next(csv.reader(fh)) == LOCUST_HISTORY


async def test_session_headers_and_a_plain_def_task_in_a_worker_thread(site: Site, tmp_path: Path) -> None:
    code, _, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, task, constant

        class Unported(HttpUser):
            wait_time = constant(0.01)

            def on_start(self):
                self.client.post("/login")          # not awaited, not async: runs in a thread, blocks
                self.client.headers.update({"X-Token": "t0k"})

            @task
            def both(self):
                r = self.client.get("/hdr")
                assert r.status_code == 200, r.status_code
                with self.client.get("/hello", catch_response=True) as resp:
                    if resp.text != "hi":
                        resp.failure("wrong body")
    """, "-H", site.url, "-u", "2", "-r", "20", "-t", "2s")
    assert code == 0, err
    assert site.seen["POST /login"] == 2
    assert site.seen["GET /hdr"] > 0 and site.seen["GET /hello"] > 0


@pytest.mark.parametrize("body, expect", [
    ("raise ValueError('task broke')", "task broke"),
    ("self.client.get('/hello')", "never awaited"),
    ("import time; time.sleep(1.0)", "event loop was blocked"),
])
async def test_a_broken_task_fails_the_run_with_its_reason(site: Site, tmp_path: Path, body: str,
                                                          expect: str) -> None:
    code, out, err = await loadtest(tmp_path, f"""
        from loadtest import HttpUser, task, constant

        class Broken(HttpUser):
            wait_time = constant(0.05)

            @task
            async def t(self):
                await self.client.get("/ok")
                {body}
    """, "-H", site.url, "-u", "1", "-r", "10", "-t", "2s", "--csv", "run")
    assert code == 1
    assert expect in err
    with open(tmp_path / "run_exceptions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert any(expect in r["Message"] for r in rows)
    if "task broke" in expect:
        assert "Traceback" in err and 'locustfile.py", line' in err
        assert "locustfile.py" in rows[0]["Traceback"]


async def test_an_exception_in_on_start_fails_the_run_and_says_why(site: Site, tmp_path: Path) -> None:
    code, _, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, task, constant

        class NoLogin(HttpUser):
            wait_time = constant(0.05)

            async def on_start(self):
                raise RuntimeError("cannot log in")

            @task
            async def t(self):
                await self.client.get("/ok")
    """, "-H", site.url, "-u", "2", "-r", "10", "-t", "5s")
    assert code == 1
    assert "cannot log in" in err and "All users stopped" in err
    assert site.seen["GET /ok"] == 0


async def test_taskset_sequential_nested_interrupt_and_tags(site: Site, tmp_path: Path) -> None:
    locustfile = """
        from loadtest import HttpUser, SequentialTaskSet, TaskSet, constant, tag, task

        class Checkout(SequentialTaskSet):
            @task
            async def cart(self):
                await self.client.get("/cart")

            @task
            async def pay(self):
                await self.client.get("/pay")

            @task
            async def done(self):
                self.interrupt()

        class Browse(TaskSet):
            tasks = {Checkout: 1}

            @tag("browse")
            @task(3)
            async def page(self):
                await self.client.get("/page")

            @task
            async def leave(self):
                self.interrupt()

        class Shopper(HttpUser):
            wait_time = constant(0)
            tasks = [Browse]

            @tag("admin")
            @task
            async def admin(self):
                await self.client.get("/admin")
    """
    code, _, err = await loadtest(tmp_path, locustfile, "-H", site.url, "-u", "2", "-r", "20", "-t", "2s",
                                  "--seed", "7")
    assert code == 0, err
    assert site.seen["GET /page"] and site.seen["GET /admin"]
    # Sequential: every /pay follows a /cart (at most one user can be between the two at the end).
    assert 0 <= site.seen["GET /cart"] - site.seen["GET /pay"] <= 2 and site.seen["GET /pay"] > 0

    site.seen.clear()
    code, _, err = await loadtest(tmp_path, locustfile, "-H", site.url, "-u", "2", "-r", "20", "-t", "1s",
                                  "-T", "browse")
    assert code == 0, err
    assert site.seen["GET /page"] > 0 and set(site.seen) == {"GET /page"}

    site.seen.clear()
    code, _, err = await loadtest(tmp_path, locustfile, "-H", site.url, "-u", "2", "-r", "20", "-t", "1s",
                                  "-E", "admin", "browse")
    assert code == 0, err
    assert site.seen["GET /cart"] > 0 and "GET /admin" not in site.seen and "GET /page" not in site.seen


async def test_events_and_environment_decide_the_exit_code(site: Site, tmp_path: Path) -> None:
    locustfile = """
        from loadtest import HttpUser, task, constant, events

        seen = {"requests": 0}

        @events.test_start.add_listener
        def on_test_start(environment, **kwargs):
            print("test_start with runner", environment.runner is not None)

        @events.request.add_listener
        def on_request(request_type, name, response_time, response_length, exception, **kwargs):
            seen["requests"] += 1

        @events.test_stop.add_listener
        def on_test_stop(environment, **kwargs):
            print("test_stop requests seen", seen["requests"])

        @events.quitting.add_listener
        def on_quitting(environment, **kw):
            total = environment.stats.total
            print("quitting", total.num_requests == seen["requests"], total.fail_ratio,
                  total.get_response_time_percentile(0.95) >= 0)
            if total.fail_ratio > 0.01:
                environment.process_exit_code = 3
            else:
                environment.process_exit_code = 0

        class U(HttpUser):
            wait_time = constant(0.01)

            @task
            async def t(self):
                await self.client.get(PATH)
                if self.environment.stats.total.num_requests > 10_000:
                    self.environment.runner.quit()
    """
    code, out, err = await loadtest(tmp_path, locustfile.replace("PATH", "'/ok'"), "-H", site.url, "-u", "2",
                                    "-r", "20", "-t", "1s")
    assert code == 0, err
    assert "test_start with runner True" in out and "quitting True 0.0 True" in out
    code, out, err = await loadtest(tmp_path, locustfile.replace("PATH", "'/hello'"), "-H", site.url, "-u", "2",
                                    "-r", "20", "-t", "1s")
    assert code == 3, err  # every /hello without a login is a 401: the quitting hook sets 3


async def test_redirects_head_and_allow_redirects_false(site: Site, tmp_path: Path) -> None:
    code, out, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, task, constant, StopUser

        class U(HttpUser):
            wait_time = constant(0)

            @task
            async def t(self):
                r = await self.client.get("/redirect")
                assert r.status_code == 200 and r.url.endswith("/target") and len(r.history) == 1
                assert r.elapsed.total_seconds() > 0
                r = await self.client.get("/redirect", allow_redirects=False, name="no-follow")
                assert r.status_code == 302 and r.headers["Location"] == "/target"
                r = await self.client.head("/ok")
                assert r.status_code == 200 and r.content == b""
                r = await self.client.get("/ok")     # the connection is still in step after the HEAD
                assert r.text == "ok"
                raise StopUser()
    """, "-H", site.url, "-u", "1", "-r", "10", "-t", "5s", "--json", "--only-summary")
    assert code == 0, err
    assert site.seen == Counter({"GET /redirect": 2, "GET /target": 1, "HEAD /ok": 1, "GET /ok": 1})
    stats = json.loads(out)   # stdout is the JSON alone, as locust's --json
    by_name = {(s["method"], s["name"]): s for s in stats}
    assert set(by_name) == {("GET", "/redirect"), ("GET", "no-follow"), ("HEAD", "/ok"), ("GET", "/ok")}
    one = by_name[("HEAD", "/ok")]
    assert isinstance(one["last_request_timestamp"], float) and isinstance(one["start_time"], float)
    assert isinstance(one["total_response_time"], float) and isinstance(one["response_times"], dict)
    assert one["num_requests"] == 1 and one["num_failures"] == 0 and one["num_none_requests"] == 0


async def test_html_report_and_full_history(site: Site, tmp_path: Path) -> None:
    code, _, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, task, constant

        class U(HttpUser):
            wait_time = constant(0.01)

            @task
            async def a(self):
                await self.client.get("/a")

            @task
            async def b(self):
                await self.client.get("/b")
    """, "-H", site.url, "-u", "2", "-r", "20", "-t", "2s", "--html", "report.html", "--csv", "run",
        "--csv-full-history")
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "Request Statistics" in page
    assert "<script" not in page and "http://" not in page.replace(site.url, "").replace("http://www.w3.org", "")
    for col in LOCUST_STATS:
        assert f"<th>{col}</th>" in page
    assert "<td>/a</td>" in page and "<td>Aggregated</td>" in page
    with open(tmp_path / "run_stats_history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["Name"] for r in rows} >= {"/a", "/b", "Aggregated"}
    assert list(rows[0]) == LOCUST_HISTORY


async def test_locust_conf_and_locust_env_vars(site: Site, tmp_path: Path) -> None:
    (tmp_path / "locust.conf").write_text(f"# as locust reads it\nheadless = true\nusers = 3\nspawn-rate = 30\n"
                                          f"run-time = 1s\nhost = {site.url}\nonly-summary = true\n")
    code, _, err = await loadtest(tmp_path, QUICKSTART, env={"LOCUST_USERS": "2"})
    assert code == 0, err
    assert site.seen["POST /login"] == 2   # the variable beats the file
    code, _, err = await loadtest(tmp_path, QUICKSTART, "-u", "1", env={"LOCUST_USERS": "2"})
    assert code == 0 and site.seen["POST /login"] == 3  # the command line beats both
    code, _, err = await loadtest(tmp_path, QUICKSTART, env={"LOCUST_RUN_TIME": "soon"})
    assert code == 2 and "LOCUST_RUN_TIME" in err and len(err.strip().splitlines()) == 1


async def test_fixed_count_and_a_shape_that_picks_user_classes(site: Site, tmp_path: Path) -> None:
    code, _, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, LoadTestShape, task, constant

        class Admin(HttpUser):
            fixed_count = 1
            wait_time = constant(0.05)

            async def on_start(self):
                await self.client.get("/admin-start")

            @task
            async def t(self):
                await self.client.get("/admin")

        class Visitor(HttpUser):
            wait_time = constant(0.05)

            async def on_start(self):
                await self.client.get("/visitor-start")

            @task
            async def t(self):
                await self.client.get("/visit")

        class OnlyVisitorsLater(LoadTestShape):
            def tick(self):
                t = self.get_run_time()
                if t < 1:
                    return (4, 100)
                if t < 2:
                    return (3, 100, [Visitor])
                return None
    """, "-H", site.url)
    assert code == 0, err
    assert site.seen["GET /admin-start"] == 1
    assert site.seen["GET /visitor-start"] >= 3


def _self_signed(tmp: Path) -> tuple[Path, Path] | None:
    if not shutil.which("openssl"):
        return None
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return cert, key


async def test_https_checks_certificates_unless_told_not_to(tmp_path: Path) -> None:
    import ssl

    pair = _self_signed(tmp_path)
    if pair is None:
        pytest.skip("openssl is not installed")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*pair)
    seen: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        seen[request.path] += 1
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/{t:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        scenario = """
            from loadtest import HttpUser, task, constant

            class U(HttpUser):
                insecure = INSECURE
                wait_time = constant(0.05)

                @task
                async def t(self):
                    await self.client.get("/s")
        """
        code, out, err = await loadtest(tmp_path, scenario.replace("INSECURE", "False"), "-H",
                                        f"https://localhost:{port}", "-t", "1s", "--only-summary")
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in out and not seen
        code, out, err = await loadtest(tmp_path, scenario.replace("INSECURE", "True"), "-H",
                                        f"https://localhost:{port}", "-t", "1s")
        assert code == 0, err
        assert seen["/s"] > 0
    finally:
        await runner.cleanup()


async def test_a_user_class_names_a_host_header_while_connecting_to_loopback(site: Site, tmp_path: Path) -> None:
    port = site.url.rsplit(":", 1)[1]
    code, _, err = await loadtest(tmp_path, f"""
        from loadtest import HttpUser, task, constant

        class Vote(HttpUser):
            host = "http://vote.localhost:{port}"
            wait_time = constant(0.05)

            @task
            async def t(self):
                await self.client.get("/ok")

        class Result(HttpUser):
            host = "http://127.0.0.1:{port}"
            wait_time = constant(0.05)

            async def on_start(self):
                self.client.headers["Host"] = "result.localhost"

            @task
            async def t(self):
                await self.client.get("/ok")
    """, "-u", "2", "-r", "20", "-t", "1s")
    assert code == 0, err
    assert site.hosts[f"vote.localhost:{port}"] > 0 and site.hosts["result.localhost"] > 0
    assert set(site.hosts) == {f"vote.localhost:{port}", "result.localhost"}


async def test_no_locustfile_and_unsupported_flags_are_one_line_errors(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "-H", "http://127.0.0.1:9", cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "Could not find 'locustfile.py'" in err.decode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "--processes", "4", cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "not supported" in err.decode()


async def test_locust_examples_add_command_line_argument_and_nested_inline_tasksets(site: Site,
                                                                                   tmp_path: Path) -> None:
    # examples/add_command_line_argument.py and examples/nested_inline_tasksets.py, ported by the rule.
    code, out, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, TaskSet, between, events, task

        @events.init_command_line_parser.add_listener
        def _(parser):
            parser.add_argument("--my-argument", type=str, env_var="LOCUST_MY_ARGUMENT", default="")
            parser.add_argument("--env", choices=["dev", "staging", "prod"], default="dev", help="Environment")
            parser.add_argument("--endpoints", choices=["a", "b", "c"], is_multiple=True, default=["a"])
            parser.add_argument("--my-ui-invisible-argument", include_in_web_ui=False, default="I am invisible")
            parser.add_argument("--my-ui-password-argument", is_secret=True, default="I am a secret")
            parser.add_argument("--my-ui-required-argument", is_required=True, default="I am required")

        @events.test_start.add_listener
        def _(environment, **kw):
            print(f"Custom argument supplied: {environment.parsed_options.my_argument}")

        @events.init.add_listener
        def _(environment, **kw):
            if environment.web_ui:
                raise AssertionError("there is no web UI")

        class WebsiteUser(HttpUser):
            wait_time = between(0.01, 0.02)

            @task
            class TopLevelTaskSet(TaskSet):
                @task
                class IndexTaskSet(TaskSet):
                    @task(10)
                    async def index(self):
                        await self.client.get("/")

                    @task(1)
                    async def stop(self):
                        self.interrupt()

                @task
                async def stats(self):
                    await self.client.get("/stats/requests")
    """, "-H", site.url, "-u", "2", "-r", "20", "-t", "2s", "--env", "prod", env={"LOCUST_MY_ARGUMENT": "42"})
    assert code == 0, err
    assert "Custom argument supplied: 42" in out
    assert site.seen["GET /"] > 0 and site.seen["GET /stats/requests"] > 0


async def test_locust_example_response_validations_with_rest_and_a_request_listener(site: Site,
                                                                                     tmp_path: Path) -> None:
    code, out, err = await loadtest(tmp_path, """
        from loadtest import FastHttpUser, events, task, constant, StopUser
        from loadtest.exception import RescheduleTask

        class GoodUser(FastHttpUser):
            wait_time = constant(0.01)

            @task
            async def t(self):
                async with self.rest("POST", "/json", json={"username": "foo"}) as resp:
                    if resp.js.get("foo") != 1:
                        resp.failure("wrong answer")
                await self.client.get("/hello")   # 401: the listener reschedules the task
                await self.client.get("/never")
                raise StopUser()

        @events.init.add_listener
        def register_request_listener(environment, **kwargs):
            @events.request.add_listener
            def request(exception, **kwargs):
                if exception:
                    raise RescheduleTask()
    """, "-H", site.url, "-u", "1", "-r", "20", "-t", "2s")
    assert code == 1  # /hello failed with 401
    assert site.seen["POST /json"] > 1 and site.seen["GET /hello"] > 1 and "GET /never" not in site.seen


async def test_a_plain_def_task_still_sleeping_does_not_hold_the_process(site: Site, tmp_path: Path) -> None:
    import time

    began = time.monotonic()
    code, _, err = await loadtest(tmp_path, """
        import time
        from loadtest import HttpUser, task, constant

        class Slow(HttpUser):
            wait_time = constant(0)

            @task
            def t(self):
                self.client.get("/ok")
                time.sleep(60)
    """, "-H", site.url, "-u", "2", "-r", "20", "-t", "1s", "-s", "1s")
    assert code == 0, err
    assert site.seen["GET /ok"] == 2
    assert time.monotonic() - began < 45


async def test_rename_request_groups_requests_under_one_name(site: Site, tmp_path: Path) -> None:
    code, out, err = await loadtest(tmp_path, """
        from loadtest import HttpUser, task, constant, StopUser

        class U(HttpUser):
            wait_time = constant(0)

            @task
            async def t(self):
                with self.client.rename_request("/blog?id=[id]"):
                    for i in range(3):
                        await self.client.get(f"/blog?id={i}")
                await self.client.get("/ok")
                raise StopUser()
    """, "-H", site.url, "-u", "1", "-r", "10", "-t", "5s", "--json")
    assert code == 0, err
    assert {(s["name"], s["num_requests"]) for s in json.loads(out)} == {("/blog?id=[id]", 3), ("/ok", 1)}


async def test_rest_marks_bad_json_and_failed_asserts_as_failures_and_the_task_goes_on(site: Site,
                                                                                      tmp_path: Path) -> None:
    # examples/rest.py's checks, ported by the rule.
    code, _, err = await loadtest(tmp_path, """
        from loadtest import FastHttpUser, task, constant, StopUser

        class MyUser(FastHttpUser):
            wait_time = constant(0)

            @task
            async def t(self):
                async with self.rest("POST", "/json", json={"foo": 1}) as resp:
                    assert resp.js["foo"] == 2, "my custom error message"
                async with self.rest("POST", "/json", json={"foo": 1}) as resp:
                    1 / 0
                async with self.rest("GET", "/ok") as resp:
                    pass
                async with self.rest("POST", "/json") as resp:
                    assert resp.js["foo"] == 1
                await self.client.get("/after")
                raise StopUser()
    """, "-H", site.url, "-u", "1", "-r", "10", "-t", "5s", "--csv", "run")
    assert code == 1
    assert site.seen["GET /after"] == 1 and site.seen["POST /json"] == 3
    with open(tmp_path / "run_failures.csv", newline="") as fh:
        errors = [r["Error"] for r in csv.DictReader(fh)]
    assert any("my custom error message" in e for e in errors)
    assert any("ZeroDivisionError" in e for e in errors)
    assert any("Could not parse response as JSON" in e for e in errors)
    assert len(errors) == 3


async def test_a_custom_user_that_fires_request_events_is_counted(tmp_path: Path) -> None:
    # locust's custom-client pattern (examples/custom_xmlrpc_client): a plain User reports its own calls.
    code, out, err = await loadtest(tmp_path, """
        import time
        from loadtest import User, task, constant, events

        seen = []

        @events.request.add_listener
        def _(name, **kw):
            seen.append(name)

        @events.quitting.add_listener
        def _(environment, **kw):
            print("listener saw", len(seen), "stats saw", environment.stats.total.num_requests)

        class Custom(User):
            wait_time = constant(0.01)

            @task
            async def call(self):
                start = time.perf_counter()
                self.environment.events.request.fire(
                    request_type="xmlrpc", name="get_time", response_time=(time.perf_counter() - start) * 1000,
                    response_length=0, exception=None, context={})
                if len(seen) >= 5:
                    self.environment.events.request.fire(request_type="xmlrpc", name="broken", response_time=1,
                                                         response_length=0, exception=ValueError("x"))
                    self.environment.runner.quit()
    """, "-u", "1", "-r", "10", "-t", "5s", "--csv", "run")
    assert code == 1, err      # the failed call
    counts = out.split("listener saw ")[1].split()
    assert counts[0] == counts[3] and int(counts[0]) >= 6
    with open(tmp_path / "run_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert rows["broken"]["Failure Count"] == "1" and int(rows["get_time"]["Request Count"]) >= 5
