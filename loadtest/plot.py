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
                 title: str = "Load test", services: Sequence[Sequence[object]] = (),
                 fine: dict[str, list[float | None]] | None = None) -> None:
    """The run on one time axis: req/s, latency, users, and (only when the balancer was sampled) replicas
    with held requests and cold starts, per service when /status lists services. `fine` carries p50/p95 with
    sub-millisecond resolution (the CSV's whole milliseconds would draw 0/1 ms saw-teeth)."""
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
    by_service = _services(services, t0)

    if has_lb:
        fig, axes = plt.subplots(4, 1, sharex=True, figsize=FIGSIZE, dpi=DPI)
        ax_rps, ax_lat, ax_users, ax_rep = axes
    else:
        # No --lb-admin: no replicas panel at all (an empty panel would only say what is missing).
        fig, axes = plt.subplots(3, 1, sharex=True, figsize=(FIGSIZE[0], FIGSIZE[1] * 0.8), dpi=DPI)
        ax_rps, ax_lat, ax_users = axes
        ax_rep = ax_users
    fig.suptitle(title)

    ax_rps.plot(times, _fill(series("Requests/s")), label="requests/s", color="tab:blue")
    ax_rps.plot(times, _fill(series("Failures/s")), label="failures/s", color="tab:red")
    ax_rps.set_ylabel("req/s")

    # A second with no finished request has no latency: a gap in the line, not a fake 0 or a carried value.
    rps = series("Requests/s")
    for name, label, color in (("50%", "p50", "tab:green"), ("95%", "p95", "tab:orange")):
        values = fine[name] if fine and len(fine.get(name) or ()) == len(rows) else series(name)
        lat = [v if (r or 0) > 0 and v is not None else math.nan for v, r in zip(values, rps)]
        ax_lat.plot(times, lat, label=label, color=color)
    if len(by_service) > 1:
        for k, (name, pts) in enumerate(sorted(by_service.items())):
            lat_pts = [(t, s["Latency ms"]) for t, s in pts if s.get("Latency ms") is not None]
            if lat_pts:
                ax_lat.plot([p[0] for p in lat_pts], [p[1] for p in lat_pts], linestyle=":",
                            color=f"C{k + 4}", label=f"{name} backend latency")
    ax_lat.set_ylabel("latency (ms)")

    ax_users.step(times, _fill(series("User Count")), where="post", label="users", color="tab:purple")
    ax_users.set_ylabel("users")

    marks: list[tuple[float, int]] = []
    if has_lb:
        desired = series("Replicas Desired")
        tops: list[float] = []
        if len(by_service) > 1:
            # Several services behind the balancer: one current/desired pair each, colours by service.
            for k, (name, pts) in enumerate(sorted(by_service.items())):
                ts = [t for t, _ in pts]
                cur = _fill([s.get("Replicas Current") for _, s in pts])
                des = _fill([s.get("Replicas Desired") for _, s in pts])
                ax_rep.step(ts, cur, where="post", label=f"{name} current", color=f"C{k}")
                ax_rep.step(ts, des, where="post", label=f"{name} desired", color=f"C{k}", linestyle="--",
                            alpha=0.6)
                tops += cur + des
                held = [s.get("Replicas Held") for _, s in pts]
                if any(held):
                    ax_rep.step(ts, _fill(held), where="post", label=f"{name} held", color=f"C{k}",
                                linestyle=":", alpha=0.8)
                    tops += _fill(held)
        else:
            ax_rep.step(times, _fill(series("Replicas Current")), where="post", label="current", color="tab:blue")
            ax_rep.step(times, _fill(desired), where="post", label="desired", color="tab:gray", linestyle="--")
            marks = scale_decisions(times, desired)
            held = series("Replicas Held")
            if any(held):
                ax_rep.step(times, _fill(held), where="post", label="held requests", color="tab:olive")
                tops += [v for v in held if v is not None]
            tops += [v for v in (*series("Replicas Current"), *desired) if v is not None]
        for t, n in cold_start_marks(times, series("Cold Starts"), series("Last Cold Start s")):
            ax_rep.axvline(t, color="tab:cyan", alpha=0.7, linewidth=1.5,
                           label="cold start" if not any(
                               lbl == "cold start" for lbl in ax_rep.get_legend_handles_labels()[1]) else None)
            if n is not None:
                ax_rep.annotate(f"cold {n:.1f}s", (t, 0), textcoords="offset points", xytext=(2, 2), fontsize=7,
                                color="tab:cyan")
        ax_rep.set_ylim(0, max(tops, default=1) + 1.5)  # headroom for the decision labels
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


def cold_start_marks(times: Sequence[float], counts: Sequence[float | None],
                     last: Sequence[float | None]) -> list[tuple[float, float | None]]:
    """(time, measured seconds) wherever the balancer's cold start counter went up."""
    marks: list[tuple[float, float | None]] = []
    prev: float | None = None
    for t, c, s in zip(times, counts, last):
        if c is None:
            continue
        if prev is not None and c > prev:
            marks.append((t, s))
        prev = c
    return marks


def _services(rows: Sequence[Sequence[object]], t0: float) -> dict[str, list[tuple[float, dict[str, float | None]]]]:
    """PREFIX_services.csv rows (Timestamp, Service, ...) grouped by service, times relative to t0."""
    from loadtest.runner import SERVICES_COLUMNS

    out: dict[str, list[tuple[float, dict[str, float | None]]]] = {}
    for r in rows:
        t = _num(r[0])
        if t is None:
            continue
        values = {name: _num(v) for name, v in zip(SERVICES_COLUMNS[2:], r[2:])}
        out.setdefault(str(r[1]), []).append((t - t0, values))
    return out


def _fill(values: list[float | None]) -> list[float]:
    """Missing samples carry the last known value (0 before the first) so lines do not break."""
    out: list[float] = []
    last = 0.0
    for v in values:
        if v is not None:
            last = v
        out.append(last)
    return out


def plot_csv(history_csv: str, path: str, title: str = "Load test") -> None:
    header, rows = read_history(history_csv)
    services: list[list[str]] = []
    svc = history_csv.replace("_stats_history.csv", "_services.csv")
    if svc != history_csv:
        try:
            _, services = read_history(svc)
        except OSError:
            pass
    plot_history(header, rows, path, title=title, services=services)
