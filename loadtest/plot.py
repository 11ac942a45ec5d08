"""One picture of a run: load, latency, users and replicas stacked on one shared time axis.

Scale decisions (the moments the balancer's desired replica count changed) are marked across every panel,
so cause and effect line up vertically.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence

FIGSIZE = (12.0, 10.0)
DPI = 100


def _num(v: object) -> float | None:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_history(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def scale_decisions(times: Sequence[float], desired: Sequence[float | None]) -> list[tuple[float, int]]:
    """(time, new desired) wherever the desired replica count changed from the previous known sample."""
    marks: list[tuple[float, int]] = []
    last: float | None = None
    for t, d in zip(times, desired):
        if d is None:
            continue
        if last is not None and d != last:
            marks.append((t, int(d)))
        last = d
    return marks


def plot_history(columns: Sequence[str], rows: Sequence[Sequence[object]], path: str,
                 title: str = "Load test") -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    col = {name: i for i, name in enumerate(columns)}

    def series(name: str) -> list[float | None]:
        i = col.get(name)
        return [None if i is None else _num(r[i]) for r in rows]

    stamps = series("Timestamp")
    t0 = next((s for s in stamps if s is not None), 0.0)
    times = [(s or t0) - t0 for s in stamps]
    has_lb = "Replicas Current" in col

    fig, axes = plt.subplots(4, 1, sharex=True, figsize=FIGSIZE, dpi=DPI)
    ax_rps, ax_lat, ax_users, ax_rep = axes
    fig.suptitle(title)

    ax_rps.plot(times, _fill(series("Requests/s")), label="requests/s", color="tab:blue")
    ax_rps.plot(times, _fill(series("Failures/s")), label="failures/s", color="tab:red")
    ax_rps.set_ylabel("req/s")

    # A second with no finished request has no latency: a gap in the line, not a fake 0 or a carried value.
    rps = series("Requests/s")
    for name, label, color in (("50%", "p50", "tab:green"), ("95%", "p95", "tab:orange")):
        lat = [v if (r or 0) > 0 and v is not None else math.nan for v, r in zip(series(name), rps)]
        ax_lat.plot(times, lat, label=label, color=color)
    ax_lat.set_ylabel("latency (ms)")

    ax_users.step(times, _fill(series("User Count")), where="post", label="users", color="tab:purple")
    ax_users.set_ylabel("users")

    marks: list[tuple[float, int]] = []
    if has_lb:
        desired = series("Replicas Desired")
        ax_rep.step(times, _fill(series("Replicas Current")), where="post", label="current", color="tab:blue")
        ax_rep.step(times, _fill(desired), where="post", label="desired", color="tab:gray", linestyle="--")
        marks = scale_decisions(times, desired)
        top = max([v for v in (*series("Replicas Current"), *desired) if v is not None], default=1)
        ax_rep.set_ylim(0, top + 1.5)  # headroom for the decision labels
    else:
        ax_rep.text(0.5, 0.5, "no --lb-admin: replicas not sampled", ha="center", va="center",
                    transform=ax_rep.transAxes, color="gray")
    ax_rep.set_ylabel("replicas")
    ax_rep.set_xlabel("seconds since start")

    for k, (t, n) in enumerate(marks):
        for ax in axes:
            ax.axvline(t, color="tab:red", alpha=0.45, linestyle=":", linewidth=1.2,
                       label="scale decision" if k == 0 and ax is ax_rep else None)
        ax_rep.annotate(f"\u2192{n}", (t, n), textcoords="offset points", xytext=(2, 4), fontsize=8)

    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax is not ax_rep or not has_lb:
            ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    # Fixed layout, not bbox_inches="tight": the image keeps exactly FIGSIZE * DPI pixels.
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _fill(values: list[float | None]) -> list[float]:
    """Missing samples carry the last known value (0 before the first) so lines do not break."""
    out: list[float] = []
    last = 0.0
    for v in values:
        if v is not None:
            last = v
        out.append(last)
    return out


def plot_csv(history_csv: str, path: str) -> None:
    header, rows = read_history(history_csv)
    plot_history(header, rows, path)
