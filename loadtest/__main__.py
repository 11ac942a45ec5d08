"""`python -m loadtest`: locust's headless command line, on the asyncio generator.

    python -m loadtest -f loadtest/scenarios/web.py -H http://127.0.0.1:8080 -u 32 -r 10 -t 2m \\
        --headless --csv reports/run --lb-admin http://127.0.0.1:8081 --plot reports/run.png

Flags that locust has mean what they mean in locust. Ours: --shape/--shape-args (a bundled shape),
--lb-admin (sample the balancer's /status into the history), --plot, --seed, --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from loadtest.client import check_base_url
from loadtest.runner import RunOptions, RunResult, load_classes, run
from loadtest.shapes import SHAPES, parse_shape
from loadtest.stats import stats_rows

DEFAULT_SCENARIO = str(Path(__file__).parent / "scenarios" / "web.py")
_SPAN = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")


def parse_timespan(text: str) -> float:
    """locust's -t: `90`, `30s`, `2m`, `1h30m`, `1m30s` -> seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    for m in _SPAN.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"bad run time {text!r} (use e.g. 30s, 2m, 1h30m)")
    return total


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description="Locust-style load tests on asyncio.")
    p.add_argument("user_classes", nargs="*", metavar="UserClass", help="only run these user classes")
    p.add_argument("-f", "--locustfile", default=DEFAULT_SCENARIO,
                   help="scenario: a .py file or a module name (default: the bundled web scenario)")
    p.add_argument("-H", "--host", help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("-u", "--users", type=int, default=1, help="peak number of concurrent users")
    p.add_argument("-r", "--spawn-rate", type=float, default=1.0, help="users started (or stopped) per second")
    p.add_argument("-t", "--run-time", help="stop after this long, e.g. 30s, 2m, 1h30m")
    p.add_argument("--headless", action="store_true", help="accepted for locust compatibility (always headless)")
    p.add_argument("--csv", dest="csv_prefix", metavar="PREFIX",
                   help="write PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv")
    p.add_argument("--shape", help=f"a bundled shape: {', '.join(sorted(SHAPES))}; NAME or NAME:key=value,...")
    p.add_argument("--shape-args", default="", help="key=value,... parameters for --shape")
    p.add_argument("--lb-admin", metavar="URL", help="sample the balancer's GET /status each second")
    p.add_argument("--plot", metavar="FILE.png", help="draw the run's history into this PNG")
    p.add_argument("--seed", type=int, help="seed the users' random choices (tasks, waits)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as failed")
    p.add_argument("-s", "--stop-timeout", type=float, default=5.0,
                   help="seconds users get to finish their current task when stopping")
    p.add_argument("--only-summary", action="store_true", help="no progress line each second")
    p.add_argument("--exit-code-on-error", type=int, default=1,
                   help="exit code when any request failed (locust's default: 1)")
    return p


def load_scenario(target: str) -> ModuleType:
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"no scenario file {target}")
        name = "loadtest_scenario_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def format_summary(result: RunResult) -> str:
    lines = [f"{'Type':<8} {'Name':<40} {'# reqs':>9} {'# fails':>14} | {'Avg':>7} {'Min':>7} {'Max':>7} "
             f"{'Med':>7} | {'req/s':>9} {'p95':>7}"]
    lines.append("-" * len(lines[0]))
    rows = stats_rows(result.stats, result.duration)
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(lines[0]))
        reqs, fails = int(r[2]), int(r[3])  # type: ignore[call-overload]
        pct = 100.0 * fails / reqs if reqs else 0.0
        fails_text = f"{fails}({pct:.2f}%)"
        lines.append(f"{r[0]!s:<8} {str(r[1])[:40]:<40} {reqs:>9} {fails_text:>14} | {float(r[5]):>7.1f} "  # type: ignore[arg-type]
                     f"{float(r[6]):>7.1f} {float(r[7]):>7.1f} {r[4]!s:>7} | {float(r[9]):>9.1f} {r[16]!s:>7}")  # type: ignore[arg-type]
    if result.stats.errors:
        lines.append("")
        lines.append("Failures:")
        for (method, name, err), seen in sorted(result.stats.errors.items(), key=lambda kv: -kv[1][0])[:10]:
            lines.append(f"  {int(seen[0]):>8}  {method} {name}: {err}")
    if result.stats.exceptions:
        lines.append("")
        lines.append("Exceptions raised by tasks:")
        for err, n in sorted(result.stats.exceptions.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {n:>8}  {err}")
    return "\n".join(lines)


async def _run_until_signal(users: list, opts: RunOptions) -> RunResult:
    """Ctrl-C or SIGTERM ends the run early but still writes every file, as locust does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run(users, opts, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_time = parse_timespan(args.run_time) if args.run_time else None
        shape = parse_shape(args.shape, args.shape_args) if args.shape else None
        module = load_scenario(args.locustfile)
        users, file_shape = load_classes(vars(module))
    except (ValueError, FileNotFoundError, ImportError, SyntaxError) as exc:
        parser.error(str(exc))
    if args.user_classes:
        wanted = set(args.user_classes)
        users = [u for u in users if u.__name__ in wanted]
    if not users:
        parser.error(f"no user classes to run in {args.locustfile}")
    # Like locust: -H wins for every class; without it each class goes to its own host.
    try:
        for cls in users:
            if not (args.host or cls.host):
                parser.error(f"no host for {cls.__name__}: pass -H/--host or set `host` on the class")
            check_base_url(args.host or cls.host)
    except ValueError as exc:
        parser.error(str(exc))
    host = args.host or users[0].host
    if args.users < 0 or args.spawn_rate <= 0:
        parser.error("-u must be >= 0 and -r > 0")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'swarmscale[plot]'")
    for target in (args.csv_prefix, args.plot):
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    opts = RunOptions(host=args.host, users=args.users, spawn_rate=args.spawn_rate, run_time=run_time,
                      shape=shape or file_shape, csv_prefix=args.csv_prefix, lb_admin=args.lb_admin,
                      plot=args.plot, seed=args.seed, timeout=args.timeout, stop_timeout=args.stop_timeout,
                      progress=None if args.only_summary else sys.stdout)
    load = repr(opts.shape) if opts.shape is not None else f"{args.users} users"
    opts.plot_title = f"{Path(args.locustfile).stem} against {host} | {load}"
    if opts.shape is not None:
        print(f"shape: {opts.shape!r}", flush=True)
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; this only keeps odd platforms working, slower
        result = asyncio.run(_run_until_signal(users, opts))
    else:
        result = uvloop.run(_run_until_signal(users, opts))
    print()
    print(format_summary(result))
    return args.exit_code_on_error if result.stats.num_failures else 0


if __name__ == "__main__":
    sys.exit(main())
