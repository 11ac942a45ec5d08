"""The run summary from a history CSV, and its command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtest.plot import DPI, FIGSIZE, plot_csv, scale_decisions
from loadtest.report import format_summary, main, summarize, summarize_rows
from loadtest.runner import LB_COLUMNS
from loadtest.stats import HISTORY_CSV_COLUMNS

# (second, users, req/s, p95 ms, replicas current, replicas desired): a step from 4 to 64 users at t=10,
# back to 4 at t=30; replicas 1 -> 6 and back to 1 at t=50.
TIMELINE = (
    [(t, 4, 40, 110, 1, 1) for t in range(0, 10)]
    + [(10, 64, 300, 900, 1, 1), (11, 64, 320, 800, 1, 6), (12, 64, 400, 700, 3, 6), (13, 64, 500, 400, 6, 6)]
    + [(t, 64, 600, 120, 6, 6) for t in range(14, 30)]
    + [(t, 4, 40, 105, 6, 6) for t in range(30, 45)]
    + [(45, 4, 40, 105, 6, 1), (46, 4, 40, 100, 4, 1)]
    + [(t, 4, 40, 100, 2, 1) for t in range(47, 50)]
    + [(t, 4, 40, 100, 1, 1) for t in range(50, 55)]
)


def history(path: Path, timeline=TIMELINE, lb: bool = True) -> list[dict[str, str]]:
    columns = [*HISTORY_CSV_COLUMNS, *(LB_COLUMNS if lb else ())]
    rows = []
    total = 0
    for t, users, rps, p95, cur, des in timeline:
        total += rps
        row = {c: "0" for c in columns}
        row.update({"Timestamp": str(1_700_000_000 + t), "User Count": str(users), "Type": "", "Name": "Aggregated",
                    "Requests/s": f"{rps:.2f}", "50%": str(p95 // 2), "95%": str(p95),
                    "Total Request Count": str(total), "Total Failure Count": "0"})
        if lb:
            row.update({"Replicas Current": str(cur), "Replicas Desired": str(des), "Backends": str(cur),
                        "Backends In Flight": "3", "Last Decision": json.dumps({"desired": des})})
        rows.append(row)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_summary_of_a_step(tmp_path: Path) -> None:
    history(tmp_path / "demo_stats_history.csv")
    s = summarize(str(tmp_path / "demo"))
    assert (s.peak_users, s.load_start_s, s.load_end_s) == (64, 10, 30)
    assert (s.replicas_min, s.replicas_at_step, s.peak_replicas) == (1, 1, 6)
    assert s.first_scale_up_s == 2  # current rose to 3 at t=12
    assert s.to_peak_s == 3
    assert s.back_to_min_s == 20  # back at 1 replica at t=50, the step ended at t=30
    assert (s.p95_before_ms, s.p95_during_ms, s.p95_after_ms) == (110, 120, 105)
    assert s.total_requests == sum(r[2] for r in TIMELINE) and s.total_failures == 0


def test_back_at_minimum_means_the_floor_before_the_step(tmp_path: Path) -> None:
    # The balancer went to 2 replicas just before the step; "back at minimum" still means 1.
    early = [(t, u, r, p, 2 if t >= 8 else c, 2 if t >= 8 else d) for t, u, r, p, c, d in TIMELINE[:12]]
    s = summarize_rows(history(tmp_path / "h.csv", early + TIMELINE[12:]))
    assert (s.replicas_min, s.replicas_at_step) == (1, 2)
    assert s.first_scale_up_s == 2 and s.back_to_min_s == 20


def test_final_stats_file_wins_for_totals(tmp_path: Path) -> None:
    history(tmp_path / "r_stats_history.csv")
    (tmp_path / "r_stats.csv").write_text("Type,Name,Request Count,Failure Count\nGET,/,12345,7\n,Aggregated,12345,7\n")
    s = summarize(str(tmp_path / "r_stats_history.csv"))
    assert (s.total_requests, s.total_failures) == (12345, 7)


def test_no_scale_down_within_the_run_is_said_not_guessed(tmp_path: Path) -> None:
    rows = history(tmp_path / "h.csv", TIMELINE[:40])
    s = summarize_rows(rows)
    assert s.back_to_min_s is None
    assert "not within the run" in format_summary(s)


def test_without_lb_columns(tmp_path: Path) -> None:
    s = summarize_rows(history(tmp_path / "h.csv", lb=False))
    assert s.peak_replicas is None and s.first_scale_up_s is None
    assert "not sampled" in format_summary(s)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history(tmp_path / "demo_stats_history.csv")
    assert main([str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "peak 6" in out and "back at 1 after 20 s" in out
    assert main([str(tmp_path / "demo"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peak_replicas"] == 6
    assert main([str(tmp_path / "missing")]) == 2


def test_scale_decisions_are_changes_of_desired() -> None:
    assert scale_decisions([0, 1, 2, 3, 4], [1, None, 6, 6, 1]) == [(2, 6), (4, 1)]


def test_plot_from_history_csv(tmp_path: Path) -> None:
    from PIL import Image

    history(tmp_path / "demo_stats_history.csv")
    png = tmp_path / "demo.png"
    plot_csv(str(tmp_path / "demo_stats_history.csv"), str(png))
    with Image.open(png) as img:
        assert img.size == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


def test_report_shows_held_requests_cold_starts_and_services(tmp_path) -> None:
    import csv as _csv

    from loadtest.report import format_summary, summarize
    from loadtest.runner import LB_COLUMNS, SERVICES_COLUMNS
    from loadtest.stats import HISTORY_CSV_COLUMNS

    prefix = tmp_path / "run"
    with open(f"{prefix}_stats_history.csv", "w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow([*HISTORY_CSV_COLUMNS, *LB_COLUMNS])
        for i in range(6):
            users = 8 if 2 <= i < 4 else 1
            w.writerow([1000 + i, users, "", "Aggregated", "10", "0", *([5] * 11), 10 * i, 0, 5, 5, 1, 9, 3,
                        1, 1, 1, 0, "", 3 if i == 2 else 0, 1 if i >= 2 else 0, 2.5 if i >= 2 else ""])
    with open(f"{prefix}_services.csv", "w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(SERVICES_COLUMNS)
        for i in range(3):
            w.writerow([1000 + i, "vote", i, 2, i, i, 1.5, 1, 0, 10.0, ""])
            w.writerow([1000 + i, "result", 1, 1, "", "", "", 1, 0, "", ""])
    s = summarize(str(prefix))
    assert (s.held_peak, s.cold_starts, s.last_cold_start_s) == (3, 1, 2.5)
    vote = next(v for v in s.services if v.name == "vote")
    assert (vote.replicas_min, vote.replicas_peak, vote.held_peak, vote.cold_starts) == (0, 2, 2, 2)
    text = format_summary(s)
    assert "Held requests:       peak 3" in text and "Cold starts:         1, last took 2.5 s" in text
    assert "Service vote:" in text and "backend latency 10.0 ms" in text and "Service result:" in text


def test_report_without_the_newer_columns_says_nothing_about_them(tmp_path) -> None:
    import csv as _csv

    from loadtest.report import format_summary, summarize
    from loadtest.stats import HISTORY_CSV_COLUMNS

    prefix = tmp_path / "old"
    with open(f"{prefix}_stats_history.csv", "w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow([*HISTORY_CSV_COLUMNS, "Replicas Current", "Replicas Desired"])
        for i in range(3):
            w.writerow([1000 + i, 2, "", "Aggregated", "10", "0", *([5] * 11), 10 * i, 0, 5, 5, 1, 9, 3, 1, 1])
    s = summarize(str(prefix))
    assert s.held_peak is None and s.cold_starts is None and s.services == ()
    assert "Held" not in format_summary(s) and "Cold" not in format_summary(s)
