"""Pieces of the locust compatibility that need no server: the cookie jar, time strings, locust.conf and
LOCUST_* parsing, /status parsing with and without the newer keys, the plot's panels and the HTML page."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from loadtest.__main__ import build_parser, parse_timespan, settings_argv
from loadtest.client import CookieJar, connect_address
from loadtest.runner import LB_COLUMNS, RunResult, parse_status
from loadtest.stats import HISTORY_CSV_COLUMNS, RequestStats


def raw(*cookies: str) -> list[tuple[bytes, bytes]]:
    return [(b"Content-Type", b"text/plain"), *((b"Set-Cookie", c.encode()) for c in cookies)]


def test_cookie_jar_scopes_by_path_and_host_and_forgets_expired_cookies() -> None:
    jar = CookieJar()
    jar.store("shop.test", "/login", raw("sid=1; Path=/", "cart=2; Path=/cart"))
    assert jar.header("shop.test", "/") == "sid=1"
    assert jar.header("shop.test", "/cart/items") == "sid=1; cart=2"
    assert jar.header("other.test", "/") == ""            # host-only without Domain
    jar.store("shop.test", "/", raw("sid=1; Path=/; Max-Age=0"))
    assert jar.header("shop.test", "/") == "" and "sid" not in jar
    jar.store("a.shop.test", "/", raw("wide=3; Domain=shop.test; Path=/"))
    assert jar.header("b.shop.test", "/") == "wide=3"
    jar["manual"] = "4"
    assert jar.get("manual") == "4" and "manual=4" in jar.header("x.test", "/")
    jar.clear()
    jar.store("shop.test", "/", raw("wide=3; Domain=shop.test; Path=/"))  # same answer as before: stored again
    assert jar.get("wide") == "3"


def test_a_cookie_set_again_with_a_new_value_replaces_the_old_one() -> None:
    jar = CookieJar()
    jar.store("h", "/", raw("sid=1; Path=/"))
    assert jar.header("h", "/") == "sid=1"
    jar.store("h", "/", raw("sid=2; Path=/"))
    assert jar.header("h", "/") == "sid=2"


def test_localhost_names_connect_to_loopback() -> None:
    assert connect_address("vote.localhost") == "127.0.0.1"
    assert connect_address("localhost") == "127.0.0.1"
    assert connect_address("10.0.0.1") == "10.0.0.1"


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("2m", 120), ("1h30m", 5400), ("90", 90), ("1m30s", 90)])
def test_time_strings(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


def test_settings_from_files_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "locust.conf").write_text("[locust]\nusers = 5\nheadless = true\ntags = a b\nrun-time = 1m\n")
    (tmp_path / "pyproject.toml").write_text('[tool.locust]\nspawn-rate = 7\nexclude-tags = ["c"]\n')
    parser = build_parser()
    pre = settings_argv(parser, [], {"LOCUST_USERS": "9", "LOCUST_HOST": "http://127.0.0.1:1"})
    args = parser.parse_args(pre)
    assert (args.users, args.spawn_rate, args.run_time, args.headless) == (9, 7.0, 60.0, True)
    assert args.tags == ["a", "b"] and args.exclude_tags == ["c"] and args.host == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="LOCUST_USERS"):
        settings_argv(parser, [], {"LOCUST_USERS": "many"})


def test_status_without_the_newer_keys_leaves_them_empty() -> None:
    old = parse_status({"replicas": {"current": 2, "desired": 3}, "backends": [{"inflight": 1}, {"inflight": 2}]})
    assert (old.current, old.desired, old.backends, old.inflight) == (2, 3, 2, 3)
    assert old.held is None and old.cold_starts is None and old.services == []
    assert old.columns()[-3:] == ["", "", ""]
    assert parse_status({}).columns() == ["", "", "", "", "", "", "", ""]


def test_status_with_held_cold_starts_and_services() -> None:
    doc = {
        "replicas": {"current": 0, "desired": 1, "held": 4, "cold_starts": 2, "last_cold_start_s": 3.5},
        "backends": [],
        "services": [
            {"name": "vote", "rule": "Host(`vote.localhost`)", "replicas": {"current": 1, "desired": 2, "held": 0,
                                                                           "cold_starts": 1},
             "backends": [{"inflight": 2, "latency_ms": 10.0}, {"inflight": 0, "latency_ms": 20.0}], "error": None},
            {"name": "result", "replicas": None, "backends": None, "error": "no such service"},
        ],
    }
    s = parse_status(doc)
    assert (s.held, s.cold_starts, s.last_cold_start_s) == (4, 2, 3.5)
    vote, result = s.services
    assert (vote.name, vote.current, vote.desired, vote.inflight, vote.latency_ms) == ("vote", 1, 2, 2, 15.0)
    assert result.current is None and result.error == "no such service"
    assert len(s.columns()) == len(LB_COLUMNS)


def _history(with_lb: bool, rows: int = 6) -> tuple[list[str], list[list[object]]]:
    cols = [*HISTORY_CSV_COLUMNS, *(LB_COLUMNS if with_lb else ())]
    out = []
    t0 = int(time.time())
    for i in range(rows):
        row: list[object] = [t0 + i, 4, "", "Aggregated", "100.0", "0.0", *([1] * 11), 100 * i, 0, 1, 0.6, 0.2, 2, 3]
        if with_lb:
            row += [1 + i // 3, 2, 2, 1, "", i, 1 if i > 2 else 0, 2.5 if i > 2 else ""]
        out.append(row)
    return cols, out


def test_plot_without_lb_admin_has_no_replicas_panel_and_sub_ms_latency_is_smooth(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from loadtest.plot import plot_history

    cols, rows = _history(False)
    saved: list[object] = []
    real_close = plt.close
    plt.close = lambda fig=None: saved.append(fig)  # type: ignore[assignment,misc]
    try:
        plot_history(cols, rows, str(tmp_path / "a.png"), title="StepUp",
                     fine={"50%": [0.35, 0.4, 0.45, 0.4, 0.35, 0.4], "95%": [0.8] * 6})
        cols2, rows2 = _history(True)
        plot_history(cols2, rows2, str(tmp_path / "b.png"), title="x",
                     services=[[rows2[0][0], "vote", 1, 2, 0, 0, "", 1, 0, 5.0, ""],
                               [rows2[0][0], "result", 2, 2, 3, 1, 1.5, 2, 1, 7.0, ""]])
    finally:
        plt.close = real_close  # type: ignore[assignment]
    fig_a, fig_b = saved
    assert len(fig_a.axes) == 3 and len(fig_b.axes) == 4  # type: ignore[attr-defined]
    assert fig_a._suptitle.get_text() == "StepUp"  # type: ignore[attr-defined]
    lat = fig_a.axes[1].lines[0].get_ydata()  # type: ignore[attr-defined]
    assert max(lat) < 1 and min(lat) > 0.3      # the fine values, not the CSV's whole 1 ms
    labels = fig_b.axes[3].get_legend_handles_labels()[1]  # type: ignore[attr-defined]
    assert {"vote current", "result current", "result held"} <= set(labels)
    for fig in saved:
        real_close(fig)  # type: ignore[arg-type]
    assert (tmp_path / "a.png").stat().st_size > 0


def test_html_page_is_self_contained_with_the_table_and_the_charts() -> None:
    from loadtest.html import render_html

    stats = RequestStats()
    stats.log_request("GET", "/a<b>", 3.0, 10)
    stats.log_error("GET", "/a<b>", "BadStatusCode(code=500)")
    stats.log_exception(ValueError("boom"), "  File x, line 1\n")
    cols, rows = _history(True)
    page = render_html(RunResult(stats, time.time(), 6.0, rows, cols, 4), "run & co")
    assert "<title>run &amp; co</title>" in page and "/a&lt;b&gt;" in page
    assert page.count("<svg") == 4 and "<script" not in page and "<link" not in page
    assert "Failures Statistics" in page and "<td>boom</td>" in page


def test_parser_accepts_locust_flags() -> None:
    args = build_parser().parse_args(["-s", "10s", "-t", "1m", "--csv-full-history", "--json", "-T", "a",
                                      "--html", "r.html", "--headless"])
    assert isinstance(args, argparse.Namespace)
    assert (args.stop_timeout, args.run_time, args.tags) == (10.0, 60.0, ["a"])


def test_locust_conf_accepts_configargparse_forms(tmp_path: Path) -> None:
    from loadtest.__main__ import _read_config

    conf = tmp_path / "locust.conf"
    conf.write_text("users: 5\nheadless\nspawn-rate 3\ntags = [a, b]\nhost = http://127.0.0.1:1\n# note\n")
    assert _read_config(conf) == [("users", "5"), ("headless", "true"), ("spawn-rate", "3"), ("tags", "a b"),
                                  ("host", "http://127.0.0.1:1")]


def test_html_file_name_tags_as_locust() -> None:
    from loadtest.__main__ import html_filename

    assert html_filename("report_u{u}_r{r}_t{t}.html", 100, 10.0, 60.0) == "report_u100_r10_t60.html"
    assert html_filename("report_u{u}_r{r}_t{t}.html", 5, 1.0, None) == "report_u5_r1_t{t}.html"
    assert html_filename("static.html", 5, 1.0, 3.0) == "static.html"
