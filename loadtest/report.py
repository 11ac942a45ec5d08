"""The story of one run, from its history CSV: how far replicas went, how fast, and what latency did.

    python -m loadtest.report reports/demo          # PREFIX, or the _stats_history.csv path itself
    python -m loadtest.report reports/demo --json

The load's "step" is found from the User Count column: rows at or above the midpoint between the lowest
non-zero and the highest user count are "during"; rows before and after that span are "before" and "after".
p95 for a phase is the median of that phase's per-second p95 values (the history holds per-second
percentiles, not every sample).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceSummary:
    """One service of a multi-service balancer (/status `services`), from PREFIX_services.csv."""

    name: str
    replicas_min: int | None
    replicas_peak: int | None
    held_peak: int | None
    cold_starts: int | None
    last_cold_start_s: float | None
    latency_ms_median: float | None  # median over the run of the mean backend latency /status reported


@dataclass(frozen=True)
class Summary:
    duration_s: float
    peak_users: int
    load_start_s: float | None  # seconds from the first row to the step's start
    load_end_s: float | None
    total_requests: int
    total_failures: int
    p95_before_ms: float | None
    p95_during_ms: float | None
    p95_after_ms: float | None
    replicas_min: int | None  # the fewest current replicas seen before the step (the floor to come back to)
    replicas_at_step: int | None
    peak_replicas: int | None
    first_scale_up_s: float | None  # from the step's start until current replicas first rose above replicas_at_step
    to_peak_s: float | None  # from the step's start until current replicas first reached their peak
    back_to_min_s: float | None  # from the step's end until current replicas were back at replicas_min
    # From /status when the balancer reports them (scale to zero): None when it did not.
    held_peak: int | None = None          # most requests held at once (waiting for a replica)
    cold_starts: int | None = None        # cold starts seen during the run (last count - first count)
    last_cold_start_s: float | None = None  # the last measured cold start
    services: tuple[ServiceSummary, ...] = ()

    @property
    def failure_pct(self) -> float:
        return 100.0 * self.total_failures / self.total_requests if self.total_requests else 0.0


def _f(v: str | None) -> float | None:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def history_path(prefix_or_path: str) -> Path:
    p = Path(prefix_or_path)
    if p.name.endswith("_stats_history.csv"):
        return p
    return p.with_name(p.name + "_stats_history.csv")


def _aggregated_totals(history: Path) -> tuple[int, int] | None:
    """(requests, failures) from the final PREFIX_stats.csv, which also counts requests that finished while
    users were stopping after the last history row."""
    stats = history.with_name(history.name.replace("_stats_history.csv", "_stats.csv"))
    if not stats.is_file():
        return None
    with open(stats, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_rows(rows: Sequence[dict[str, str]], totals: tuple[int, int] | None = None,
                   services: tuple[ServiceSummary, ...] = ()) -> Summary:
    """The summary of history rows (dicts keyed by the CSV's column names)."""
    rows = [r for r in rows if r.get("Name", "Aggregated") == "Aggregated"]
    if not rows:
        raise ValueError("the history has no rows")
    t0 = _f(rows[0]["Timestamp"]) or 0.0
    times = [(_f(r["Timestamp"]) or t0) - t0 for r in rows]
    users = [int(_f(r["User Count"]) or 0) for r in rows]
    p95 = [(_f(r.get("95%")) if (_f(r.get("Requests/s")) or 0) > 0 else None) for r in rows]
    current = [_f(r.get("Replicas Current")) for r in rows]

    peak_users = max(users)
    nonzero = [u for u in users if u > 0]
    threshold = (min(nonzero) + peak_users) / 2 if nonzero else 0
    during = [i for i, u in enumerate(users) if u > 0 and u >= threshold]
    first, last = (during[0], during[-1]) if during else (None, None)
    # The step ends where the first row after it starts (rows are about a second apart).
    load_start = times[first] if first is not None else None
    load_end = times[min(last + 1, len(rows) - 1)] if last is not None else None

    def phase_p95(idx: range) -> float | None:
        return _median([p for p in (p95[i] for i in idx) if p is not None])

    if first is not None and last is not None:
        before, in_step, after = range(0, first), range(first, last + 1), range(last + 1, len(rows))
    else:
        before, in_step, after = range(0), range(len(rows)), range(0)

    known = [c for c in current if c is not None]
    replicas_min = replicas_at_step = peak = first_up = to_peak = back = None
    if known:
        peak = int(max(known))
        start_idx = first if first is not None else 0
        before_step = [c for c in current[:start_idx + 1] if c is not None] or [known[0]]
        replicas_min, replicas_at_step = int(min(before_step)), int(before_step[-1])
        origin = times[start_idx]
        for i in range(start_idx, len(rows)):
            c = current[i]
            if c is None:
                continue
            if first_up is None and c > replicas_at_step:
                first_up = times[i] - origin
            if c >= peak:
                to_peak = times[i] - origin
                break
        if last is not None and load_end is not None:
            for i in range(last + 1, len(rows)):
                c = current[i]
                if c is not None and c <= replicas_min:
                    back = times[i] - load_end
                    break

    if totals is None:
        totals = (int(_f(rows[-1].get("Total Request Count")) or 0),
                  int(_f(rows[-1].get("Total Failure Count")) or 0))
    held = [v for v in (_f(r.get("Replicas Held")) for r in rows) if v is not None]
    colds = [v for v in (_f(r.get("Cold Starts")) for r in rows) if v is not None]
    last_cold = [v for v in (_f(r.get("Last Cold Start s")) for r in rows) if v is not None]
    return Summary(
        duration_s=times[-1], peak_users=peak_users, load_start_s=load_start, load_end_s=load_end,
        total_requests=totals[0], total_failures=totals[1], p95_before_ms=phase_p95(before),
        p95_during_ms=phase_p95(in_step), p95_after_ms=phase_p95(after), replicas_min=replicas_min,
        replicas_at_step=replicas_at_step,
        peak_replicas=peak, first_scale_up_s=first_up, to_peak_s=to_peak, back_to_min_s=back,
        held_peak=int(max(held)) if held else None,
        cold_starts=int(colds[-1] - colds[0]) if colds else None,
        last_cold_start_s=last_cold[-1] if last_cold else None,
        services=services,
    )


def summarize_services(rows: Sequence[dict[str, str]]) -> tuple[ServiceSummary, ...]:
    """Per service, from PREFIX_services.csv rows (one per service per second)."""
    by: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by.setdefault(r.get("Service", "?"), []).append(r)
    out = []
    for name, rs in sorted(by.items()):
        def col(key: str, rs: list[dict[str, str]] = rs) -> list[float]:
            return [v for v in (_f(r.get(key)) for r in rs) if v is not None]
        cur, held, colds, last, lat = (col("Replicas Current"), col("Replicas Held"), col("Cold Starts"),
                                       col("Last Cold Start s"), col("Latency ms"))
        out.append(ServiceSummary(
            name=name, replicas_min=int(min(cur)) if cur else None, replicas_peak=int(max(cur)) if cur else None,
            held_peak=int(max(held)) if held else None, cold_starts=int(colds[-1] - colds[0]) if colds else None,
            last_cold_start_s=last[-1] if last else None, latency_ms_median=_median(lat)))
    return tuple(out)


def summarize(prefix_or_path: str) -> Summary:
    """Summary of a run from its files: PREFIX (as given to --csv) or the _stats_history.csv path."""
    path = history_path(prefix_or_path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    services: tuple[ServiceSummary, ...] = ()
    svc = path.with_name(path.name.replace("_stats_history.csv", "_services.csv"))
    if svc.is_file():
        with open(svc, newline="") as fh:
            services = summarize_services(list(csv.DictReader(fh)))
    return summarize_rows(rows, _aggregated_totals(path), services)


def _s(v: float | None, unit: str = "s") -> str:
    return "n/a" if v is None else f"{v:.0f} {unit}"


def format_summary(s: Summary) -> str:
    lines = [
        f"Requests:            {s.total_requests} ({s.total_failures} failed, {s.failure_pct:.2f}%)",
        f"Users:               peak {s.peak_users}; step from {_s(s.load_start_s)} to {_s(s.load_end_s)}",
        f"p95 latency:         before {_s(s.p95_before_ms, 'ms')}, during {_s(s.p95_during_ms, 'ms')}, "
        f"after {_s(s.p95_after_ms, 'ms')}",
    ]
    if s.peak_replicas is None:
        lines.append("Replicas:            not sampled (run with --lb-admin URL)")
    else:
        lines += [
            f"Replicas:            {s.replicas_at_step} at the step (minimum before it {s.replicas_min}), "
            f"peak {s.peak_replicas}",
            f"Scale-up:            first after {_s(s.first_scale_up_s)}, peak after {_s(s.to_peak_s)} "
            "(from the step's start)",
            f"Scale-down:          back at {s.replicas_min} after "
            + (f"{_s(s.back_to_min_s)} (from the step's end)" if s.back_to_min_s is not None
               else "n/a (not within the run)"),
        ]
    if s.held_peak is not None or s.cold_starts is not None:
        lines.append(f"Held requests:       peak {'n/a' if s.held_peak is None else s.held_peak}")
        lines.append(f"Cold starts:         {'n/a' if s.cold_starts is None else s.cold_starts}"
                     + (f", last took {s.last_cold_start_s:.1f} s" if s.last_cold_start_s is not None else ""))
    for svc in s.services:
        def n(v: object) -> str:
            return "n/a" if v is None else str(v)
        lines.append(
            f"Service {svc.name + ':':<12} replicas {n(svc.replicas_min)}..{n(svc.replicas_peak)}, held peak "
            f"{n(svc.held_peak)}, cold starts {n(svc.cold_starts)}"
            + (f" (last {svc.last_cold_start_s:.1f} s)" if svc.last_cold_start_s is not None else "")
            + (f", backend latency {svc.latency_ms_median:.1f} ms" if svc.latency_ms_median is not None else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="the --csv PREFIX of a run, or its _stats_history.csv")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.prefix)
    except (OSError, ValueError, KeyError) as exc:
        print(f"loadtest.report: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary), indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
