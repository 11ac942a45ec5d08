"""`--html FILE`: one self-contained page (no script, no external file) with the run's stats table (locust's
columns), failures, errors with tracebacks, and the plot drawn as inline SVG: requests/s and failures/s,
p50/p95 latency and users on one time axis (replicas too when --lb-admin sampled them)."""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loadtest.stats import STATS_CSV_COLUMNS, exceptions_rows, failures_rows, stats_rows

if TYPE_CHECKING:
    from loadtest.runner import RunResult

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 900, 190, 60, 130, 14, 26
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f")


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def svg_chart(title: str, times: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]]) -> str:
    """A line chart as an inline <svg>; gaps where a value is missing."""
    t_max = max(times[-1] if times else 1.0, 1.0)
    values = [v for _, ys in series for v in ys if v is not None]
    y_max = (max(values, default=1.0) or 1.0) * 1.1

    def x(t: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * t / t_max

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - v / y_max)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" '
             'fill="none" stroke="#ccc"/>',
             f'<text x="{PAD_L}" y="11" font-size="11">{html.escape(title)}</text>']
    for frac in (0, 0.5, 1):
        v = y_max * frac
        parts.append(f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1):
        t = t_max * frac
        parts.append(f'<text x="{x(t):.1f}" y="{H - 8}" font-size="10" text-anchor="middle">{t:.0f}s</text>')
    for i, (label, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        runs: list[list[str]] = [[]]
        for tt, yv in zip(times, ys):
            if yv is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{x(tt):.1f},{y(yv):.1f}")
        for pts in runs:
            if len(pts) == 1:
                cx, cy = pts[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{color}"/>')
            elif pts:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(pts)}"/>')
        parts.append(f'<text x="{W - PAD_R + 8}" y="{PAD_T + 12 + 14 * i}" font-size="11" fill="{color}">'
                     f'{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for v in r:
            text = f"{v:.2f}" if isinstance(v, float) else str(v)
            cells.append(f"<td>{html.escape(text)}</td>" if "\n" not in text
                         else f"<td><pre>{html.escape(text)}</pre></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_html(result: RunResult, title: str = "Load test") -> str:
    cols = {name: i for i, name in enumerate(result.history_columns)}

    def series(name: str) -> list[float | None]:
        i = cols.get(name)
        return [None if i is None else _num(r[i]) for r in result.history]

    stamps = series("Timestamp")
    t0 = next((s for s in stamps if s is not None), 0.0)
    times = [(s or t0) - t0 for s in stamps]
    rps = series("Requests/s")
    fine50 = result.fine.get("50%") or [v if (r or 0) > 0 else None for v, r in zip(series("50%"), rps)]
    fine95 = result.fine.get("95%") or [v if (r or 0) > 0 else None for v, r in zip(series("95%"), rps)]
    charts = [
        svg_chart("Requests per second", times, [("requests/s", rps), ("failures/s", series("Failures/s"))]),
        svg_chart("Response time (ms)", times, [("p50", fine50), ("p95", fine95)]),
        svg_chart("Users", times, [("users", series("User Count"))]),
    ]
    if "Replicas Current" in cols:
        charts.append(svg_chart("Replicas", times, [("current", series("Replicas Current")),
                                                    ("desired", series("Replicas Desired")),
                                                    ("held", series("Replicas Held"))]))
    stats = result.stats
    started = datetime.datetime.fromtimestamp(result.started, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    total = stats.aggregated()
    summary = (f"{total.num_requests} requests, {total.num_failures} failures, "
               f"{sum(stats.exceptions.values())} errors in {result.duration:.1f} s; peak "
               f"{result.user_count_peak} users; started {started}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;"
        "margin:8px 0 20px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f0f0f0}td:nth-child(2),td:first-child{text-align:left}pre{text-align:left;margin:0}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", f'<p class="summary">{html.escape(summary)}</p>',
        "<h2>Request Statistics</h2>",
        _table(STATS_CSV_COLUMNS, stats_rows(stats, result.duration), "stats"),
        "<h2>Charts</h2>", '<div class="charts">', *charts, "</div>",
    ]
    if stats.errors:
        parts += ["<h2>Failures Statistics</h2>",
                  _table(("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"),
                         failures_rows(stats), "failures")]
    if stats.exceptions:
        parts += ["<h2>Exceptions Statistics</h2>",
                  _table(("Count", "Message", "Traceback", "Nodes"), exceptions_rows(stats), "exceptions")]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str, result: RunResult, title: str = "Load test") -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_html(result, title))
