"""`python -m loadtest`: locust's headless command line, on the asyncio generator.

    python -m loadtest -f locustfile.py -H http://127.0.0.1:8080 -u 32 -r 10 -t 2m \\
        --headless --csv reports/run --html reports/run.html --lb-admin http://127.0.0.1:8081 --plot reports/run.png

Flags that locust has mean what they mean in locust, and are read from locust's places too: `locust.conf`
(`~/.locust.conf`, `./locust.conf`, `pyproject.toml [tool.locust]`, `--config FILE`), then `LOCUST_*`
environment variables, then the command line (the later wins). Ours: --shape/--shape-args (a bundled shape),
--lb-admin (sample the balancer's /status into the history), --plot, --seed, --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import re
import signal
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from loadtest.client import check_base_url
from loadtest.events import events
from loadtest.runner import SERVICES_COLUMNS, Environment, Runner, RunOptions, RunResult, load_classes, run
from loadtest.shapes import SHAPES, parse_shape
from loadtest.stats import stats_rows

DEFAULT_LOCUSTFILE = "locustfile.py"
BUNDLED_SCENARIO = str(Path(__file__).parent / "scenarios" / "web.py")
CONFIG_FILES = ("~/.locust.conf", "locust.conf", "pyproject.toml")
_SPAN = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
# locust options this generator does not have: a clear error instead of a silent difference.
UNSUPPORTED = {
    "--master": "distributed runs", "--worker": "distributed runs", "--processes": "multiple processes",
    "--web-host": "the web UI", "--web-port": "the web UI", "--autostart": "the web UI",
    "--class-picker": "the web UI", "--modern-ui": "the web UI", "--legacy-ui": "the web UI",
    "--step-load": "step load (use --shape step)", "--reset-stats": "--reset-stats",
}


def parse_timespan(text: str, allow_zero: bool = False) -> float:
    """locust's time strings: `90`, `30s`, `2m`, `1h30m`, `1m30s` -> seconds."""
    text = str(text).strip().lower()
    pos, total = 0, 0.0
    for m in _SPAN.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total < 0 or (total == 0 and not allow_zero):
        raise ValueError(f"bad run time {text!r} (use e.g. 30s, 2m, 1h30m)")
    return total


def _timespan(text: str) -> float:
    try:
        return parse_timespan(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timespan0(text: str) -> float:
    try:
        return parse_timespan(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tags(text: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", text) if t]


class LocustArgumentParser(argparse.ArgumentParser):
    """argparse that takes locust's extra add_argument keywords (a locustfile's init_command_line_parser
    listener passes them): env_var names the variable; the web UI ones are accepted and have no effect."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        env_var = kwargs.pop("env_var", None)
        is_multiple = kwargs.pop("is_multiple", False)
        for key in ("include_in_web_ui", "is_secret", "is_required"):
            kwargs.pop(key, None)
        if is_multiple and "nargs" not in kwargs and kwargs.get("action") in (None, "store"):
            kwargs["nargs"] = "*"
        action = super().add_argument(*args, **kwargs)
        action.env_var = env_var  # type: ignore[attr-defined]
        return action


def build_parser() -> argparse.ArgumentParser:
    p = LocustArgumentParser(prog="python -m loadtest", description="Locust-style load tests on asyncio.")
    p.add_argument("user_classes", nargs="*", metavar="UserClass", help="only run these user classes")
    p.add_argument("-f", "--locustfile", default=DEFAULT_LOCUSTFILE,
                   help="scenario: a .py file or a module name (default: ./locustfile.py, as locust)")
    p.add_argument("--config", help="a locust.conf style file to read options from")
    p.add_argument("-H", "--host", help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("-u", "--users", type=int, default=1, help="peak number of concurrent users")
    p.add_argument("-r", "--spawn-rate", type=float, default=1.0, help="users started (or stopped) per second")
    p.add_argument("-t", "--run-time", type=_timespan, help="stop after this long, e.g. 30s, 2m, 1h30m")
    p.add_argument("--headless", action="store_true", help="accepted for locust compatibility (always headless)")
    p.add_argument("--autoquit", type=int, default=-1, help="accepted for locust compatibility")
    p.add_argument("-T", "--tags", nargs="*", metavar="TAG", help="only run tasks with one of these tags")
    p.add_argument("-E", "--exclude-tags", nargs="*", metavar="TAG", help="do not run tasks with these tags")
    p.add_argument("--csv", dest="csv_prefix", metavar="PREFIX",
                   help="write PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv, "
                        "PREFIX_exceptions.csv")
    p.add_argument("--csv-full-history", action="store_true",
                   help="a history row per request name each second, not only the Aggregated one")
    p.add_argument("--html", dest="html_file", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON on stdout (as locust)")
    p.add_argument("--json-file", metavar="PREFIX", help="write the final stats as JSON to PREFIX.json")
    p.add_argument("--print-stats", action="store_true", help="accepted (the progress line is on by default)")
    p.add_argument("--only-summary", action="store_true", help="no progress line each second")
    p.add_argument("-L", "--loglevel", default="INFO", help="accepted for locust compatibility")
    p.add_argument("--shape", help=f"a bundled shape: {', '.join(sorted(SHAPES))}; NAME or NAME:key=value,...")
    p.add_argument("--shape-args", default="", help="key=value,... parameters for --shape")
    p.add_argument("--lb-admin", metavar="URL", help="sample the balancer's GET /status each second")
    p.add_argument("--plot", metavar="FILE.png", help="draw the run's history into this PNG")
    p.add_argument("--seed", type=int, help="seed the users' random choices (tasks, waits)")
    p.add_argument("--timeout", type=_timespan, default=60.0,
                   help="a request with no answer after this long is a failure (default 60s)")
    p.add_argument("-s", "--stop-timeout", type=_timespan0, default=5.0,
                   help="time users get to finish their current task when stopping (e.g. 10s)")
    p.add_argument("--exit-code-on-error", type=int, default=1,
                   help="exit code when any request failed or a task raised (locust's default: 1)")
    p.add_argument("--max-loop-lag", type=_timespan, default=0.5,
                   help="report a blocked event loop when it is this late (default 0.5s)")
    return p


# -- locust.conf, pyproject.toml [tool.locust] and LOCUST_* variables ---------------------------------------------

def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = action
    return out


def _read_config(path: Path) -> list[tuple[str, str]]:
    if path.suffix == ".toml":
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        section = data.get("tool", {}).get("locust", {})
        return [(k, " ".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in section.items()]
    pairs = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        # configargparse's forms: `key = value`, `key: value`, `key value`, a bare `key` (a flag), `[a, b]`.
        m = re.match(r"\s*([^\s=:]+)\s*(?:[=:]\s*|\s+)?(.*)$", line)
        assert m is not None
        key, value = m.group(1), m.group(2).strip() or "true"
        if value.startswith("[") and value.endswith("]"):
            value = " ".join(v.strip().strip('"').strip("'") for v in value[1:-1].split(",") if v.strip())
        pairs.append((key.strip(), value.strip('"').strip("'")))
    return pairs


def _to_argv(options: dict[str, argparse.Action], key: str, value: str, origin: str) -> list[str]:
    name = key.strip().lstrip("-").replace("_", "-")
    action = options.get(name)
    if action is None:
        raise ValueError(f"{origin}: unknown option {key!r}")
    opt = "--" + name
    if isinstance(action, argparse._StoreTrueAction):
        truthy = value.strip().lower() in ("1", "true", "yes", "on", "")
        if value.strip().lower() not in ("1", "true", "yes", "on", "", "0", "false", "no", "off"):
            raise ValueError(f"{origin}: {value!r} is not true or false")
        return [opt] if truthy else []
    if action.type is not None:
        try:
            action.type(value)  # type: ignore[operator]
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise ValueError(f"{origin}: invalid value {value!r}") from None
    if action.nargs == "*":
        return [opt, *_tags(value)]
    return [f"{opt}={value}"]


def settings_argv(parser: argparse.ArgumentParser, argv: list[str], environ: dict[str, str],
                  strict: bool = True) -> list[str]:
    """argv for the config files and LOCUST_* variables, to put before the command line's own. Not
    `strict`: keys no option knows yet are skipped (a locustfile may add the option later)."""
    options = _long_options(parser)
    named_env = {getattr(a, "env_var", None): name for name, a in options.items() if getattr(a, "env_var", None)}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    files = [Path(os.path.expanduser(f)) for f in CONFIG_FILES]
    config = known.config or environ.get("LOCUST_CONFIG")
    if config:
        if not Path(config).is_file():
            raise ValueError(f"--config: no file {config}")
        files.append(Path(config))
    out: list[str] = []
    for path in files:
        if path.is_file():
            for key, value in _read_config(path):
                if not strict and key.strip().lstrip("-").replace("_", "-") not in options:
                    continue
                out += _to_argv(options, key, value, f"{path}: {key}")
    for var, value in sorted(environ.items()):
        if var in named_env:
            out += _to_argv(options, named_env[var], value, var)
            continue
        if not var.startswith("LOCUST_") or var in ("LOCUST_CONFIG",):
            continue
        name = var[len("LOCUST_"):].lower().replace("_", "-")
        if name not in options:
            continue  # locust's own variables for features we do not have (e.g. LOCUST_SKIP_MONKEY_PATCH)
        out += _to_argv(options, name, value, var)
    return out


# -- the locustfile --------------------------------------------------------------------------------------------

def load_scenario(target: str) -> ModuleType:
    if target.endswith(".py") or "/" in target or os.path.exists(target):
        path = Path(target)
        if path.is_dir():
            raise FileNotFoundError(f"{target} is a directory: pass one locustfile (several are not supported)")
        if not path.is_file():
            if target == DEFAULT_LOCUSTFILE:
                raise FileNotFoundError(
                    "Could not find 'locustfile.py' in the current directory: pass -f FILE "
                    f"(the bundled scenario is -f {os.path.relpath(BUNDLED_SCENARIO)})")
            raise FileNotFoundError(f"no scenario file {target}")
        name = "loadtest_scenario_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        sys.path.insert(0, str(path.resolve().parent))  # as locust: a locustfile imports its neighbours
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def html_filename(template: str, users: int | None, spawn_rate: float | None, run_time: float | None) -> str:
    """locust's --html tags: {u}, {r}, {t} become users, spawn rate and run time (whole numbers)."""
    for tag_, value in (("{u}", users), ("{r}", spawn_rate), ("{t}", run_time)):
        if value is not None:
            template = template.replace(tag_, str(int(value)))
    return template


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
        lines.append(f"{r[0]!s:<8} {str(r[1])[:40]:<40} {reqs:>9} {fails_text:>14} | {_f(r[5]):>7.1f} "
                     f"{_f(r[6]):>7.1f} {_f(r[7]):>7.1f} {r[4]!s:>7} | {_f(r[9]):>9.1f} {r[16]!s:>7}")
    if result.stats.errors:
        lines.append("")
        lines.append("Failures:")
        for (method, name, err), seen in sorted(result.stats.errors.items(), key=lambda kv: -kv[1][0])[:10]:
            lines.append(f"  {int(seen[0]):>8}  {method} {name}: {err}")
    if result.stats.exceptions:
        lines.append("")
        lines.append("Errors (exceptions raised by tasks and hooks, and the run's own checks):")
        for (msg, _), n in sorted(result.stats.exceptions.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {n:>8}  {msg}")
    return "\n".join(lines)


def _f(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


async def _run_until_signal(users: list, opts: RunOptions, env: Environment) -> RunResult:
    """Ctrl-C or SIGTERM ends the run early but still writes every file, as locust does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run(users, opts, stop=stop, environment=env)


def _runner_main(coro_factory: Callable[[], Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; this only keeps odd platforms working, slower
        return asyncio.run(coro_factory())
    return uvloop.run(coro_factory())


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser()
    for opt in argv:
        flag = opt.split("=", 1)[0]
        if flag in UNSUPPORTED:
            parser.error(f"{flag}: {UNSUPPORTED[flag]} is not supported by loadtest (see loadtest/README.md)")
    try:
        pre_argv = settings_argv(parser, argv, environ, strict=False)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"python -m loadtest: error: {exc}", file=sys.stderr)
        return 2
    first, _ = parser.parse_known_args(pre_argv + argv)
    try:
        shape = parse_shape(first.shape, first.shape_args) if first.shape else None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        module = load_scenario(first.locustfile)
    except (FileNotFoundError, ImportError, SyntaxError) as exc:
        parser.error(str(exc))
    # locust's init_command_line_parser: a locustfile may add its own options before the full parse.
    events.init_command_line_parser.fire(parser=parser)
    try:
        pre_argv = settings_argv(parser, argv, environ)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"python -m loadtest: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(pre_argv + argv)
    try:
        users, file_shape = load_classes(vars(module))
    except ValueError as exc:
        parser.error(str(exc))
    if args.user_classes:
        wanted = set(args.user_classes)
        unknown = wanted - {u.__name__ for u in users}
        if unknown:
            parser.error(f"unknown user class(es) {', '.join(sorted(unknown))} in {args.locustfile}")
        users = [u for u in users if u.__name__ in wanted]
    if not users:
        parser.error(f"no user classes to run in {args.locustfile}")
    # Like locust: -H wins for every class; without it each class goes to its own host.
    try:
        for cls in users:
            if hasattr(cls, "insecure"):
                if not (args.host or cls.host):
                    parser.error(f"no host for {cls.__name__}: pass -H/--host or set `host` on the class")
                check_base_url(args.host or cls.host or "")
    except ValueError as exc:
        parser.error(str(exc))
    host = args.host or users[0].host
    if args.users < 0 or args.spawn_rate <= 0:
        parser.error("-u must be >= 0 and -r > 0")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'swarmscale[plot]'")
    if args.html_file:
        args.html_file = html_filename(args.html_file, args.users, args.spawn_rate, args.run_time)
    for target in (args.csv_prefix, args.plot, args.html_file, args.json_file):
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    # With --json, stdout carries only the JSON (as locust's): everything else goes to stderr.
    human: TextIO = sys.stderr if args.json else sys.stdout
    opts = RunOptions(host=args.host, users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time,
                      shape=shape or file_shape, csv_prefix=args.csv_prefix,
                      csv_full_history=args.csv_full_history, html=args.html_file, lb_admin=args.lb_admin,
                      plot=args.plot, seed=args.seed, timeout=args.timeout, stop_timeout=args.stop_timeout,
                      tags=args.tags, exclude_tags=args.exclude_tags, loop_lag_limit=args.max_loop_lag,
                      progress=None if args.only_summary else human, parsed_options=args)
    if opts.shape is not None:
        shape_name = type(opts.shape).__name__ if shape is None and file_shape is not None else repr(opts.shape)
        load = shape_name
    else:
        load = f"{args.users} users"
    opts.plot_title = f"{Path(args.locustfile).stem} against {host} | {load}"
    if opts.shape is not None:
        print(f"shape: {load}", file=human, flush=True)
    env = Environment(users, args.host, timeout=args.timeout, parsed_options=args, shape_class=opts.shape,
                      errors=sys.stderr)
    Runner(users, args.host, env.stats, seed=args.seed, timeout=args.timeout, stop_timeout=args.stop_timeout,
           environment=env)
    env.events.init.fire(environment=env, runner=env.runner, web_ui=None)
    result = _runner_main(lambda: _run_until_signal(users, opts, env))
    env.events.quitting.fire(environment=env, reverse=True)
    if env.process_exit_code is not None:
        code = env.process_exit_code
    elif result.stats.errors or result.stats.exceptions:
        code = args.exit_code_on_error
    else:
        code = 0
    if code == 0 and result.stats.num_requests == 0:
        code = args.exit_code_on_error  # a run that sent nothing never passes silently
    print(file=human)
    print(format_summary(result), file=human)
    if args.lb_admin and result.history:
        # The balancer's side of the run (replicas, held requests, cold starts, services), as
        # `python -m loadtest.report` prints it from the files.
        from loadtest import report

        rows = [dict(zip(result.history_columns, map(str, r))) for r in result.history]
        svc_rows = [dict(zip(SERVICES_COLUMNS, map(str, r))) for r in result.services]
        try:
            summary = report.summarize_rows(rows, (result.stats.num_requests, result.stats.num_failures),
                                            report.summarize_services(svc_rows))
            print("\n" + report.format_summary(summary), file=human)
        except ValueError:
            pass
    if args.json:
        print(json.dumps(result.stats.serialize_stats(), indent=4), flush=True)
    if args.json_file:
        with open(f"{args.json_file}.json", "w") as fh:
            json.dump(result.stats.serialize_stats(), fh, indent=4)
    print(f"exit code {code}", file=sys.stderr, flush=True)
    env.events.quit.fire(exit_code=code)
    return code


def _exit(code: int) -> None:
    """Exit with `code`; a plain `def` task still sleeping in a worker thread must not hold the process
    (the interpreter would join that thread), so then the process ends at once, output flushed."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
