"""One typed, frozen configuration, read once from the environment.

Every option is an environment variable (uvicorn's way). `Config.from_env()` either returns a
complete, validated Config or raises `ConfigError` whose message is the one line a user sees:
the variable's name and what it expects. `lb.__main__` turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# One syntax for every number, scaling settings and the rest alike (plain ASCII, as the range shows it).
from policies.settings import _FLOAT, _INT, SETTINGS, _plain
from policies.settings import BY_NAME as SETTINGS_BY_NAME


class ConfigError(ValueError):
    """A bad environment variable. str(e) is the whole message for the user."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


# A host name or IPv4 address, or an IPv6 one in brackets; then an ASCII port.
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})", re.ASCII)


def parse_host_port(text: str, lowest_port: int = 1) -> HostPort:
    found = _HOST_PORT.fullmatch(text.strip())
    if found is None:
        raise ValueError("expects host:port")
    number = int(found.group(2))
    if not lowest_port <= number <= 65535:
        raise ValueError(f"expects host:port with a port between {lowest_port} and 65535")
    return HostPort(found.group(1).strip("[]"), number)  # allow [::1]:8080


def _listen(text: str) -> HostPort:
    """An address to listen on: port 0 means any free port (tests and benchmarks use it)."""
    return parse_host_port(text, lowest_port=0)


def _backends(text: str) -> tuple[HostPort, ...]:
    items = [part for part in text.split(",") if part.strip()]
    if text.strip() and not items:   # ",,,": something was meant, nothing was said
        raise ValueError("expects a comma-separated list of host:port")
    try:
        return tuple(parse_host_port(part) for part in items)
    except ValueError:
        raise ValueError("expects a comma-separated list of host:port (port 1-65535)") from None


# Plain ASCII numbers only: int() and float() also take `1_000` and full-width digits.


def _number(kind: Callable[[str], Any], low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Callable[[str], Any]:
    """A parser for a number within bounds; its error says what it expects.

    The bounds are the variable's range, kept here only: `parse.range` is what the README shows.
    """
    what = "an integer" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {_plain(low)}")
    if high is not None:
        bounds.append(f"<= {_plain(high)}")
    expects = f"expects {what}" + (f" {' and '.join(bounds)}" if bounds else "")
    syntax = _INT if kind is int else _FLOAT

    def parse(text: str) -> Any:
        text = text.strip()
        if not syntax.fullmatch(text):
            raise ValueError(expects)
        value = kind(text)
        if value != value or value in (float("inf"), float("-inf")):  # NaN, inf (1e999)
            raise ValueError(expects)
        if value and abs(value) < sys.float_info.min:   # subnormal: 1e-320 is no one's intent
            raise ValueError(expects)
        if low is not None and (value <= low if low_open else value < low):
            raise ValueError(expects)
        if high is not None and value > high:
            raise ValueError(expects)
        return value

    if low is not None and high is not None:
        parse.range = f"{'>' if low_open else ''}{_plain(low)}–{_plain(high)}"  # type: ignore[attr-defined]
    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"expects one of {', '.join(options)}")
        return value

    return parse


def _text(text: str) -> str:
    return text.strip()


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("expects a value")
    return text.strip()


def _token(text: str) -> str:
    """A bearer token: printable ASCII without spaces (what fits in an Authorization header)."""
    if not re.fullmatch(r"[!-~]*", text.strip(), re.ASCII):
        raise ValueError("expects printable ASCII without spaces")
    return text.strip()


def _policy(text: str) -> str:
    # Validated against the policy registry here so an unknown name stops start-up (exit 2),
    # not the first control-loop tick.
    from policies import PolicyError, resolve

    name = text.strip()
    try:
        factory = resolve(name)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:   # a user's module that fails on import: still one line, exit 2
        raise ValueError(f"cannot load {name!r} ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(factory, "decide", None)):
        raise ValueError(f"expects a policy class (with decide and initial_state), {name!r} is not one")
    return name


def env(name: str, default: str, parse: Callable[[str], Any], doc: str) -> Any:
    """Declare a config field backed by an environment variable."""
    return field(default=None, metadata={"env": name, "default": default, "parse": parse, "doc": doc})


def scaling(name: str) -> Any:
    """Declare a config field for a scaling setting: all but its attribute name is in policies.settings."""
    s = SETTINGS_BY_NAME[name]
    return env(s.env, s.default, s.parse, s.help)


_seconds = _number(float, 0, low_open=True)
_port = _number(int, 1, 65535)
# Timeouts the sweep checks: 0.1 s at least (the sweep runs at a tenth of the shortest), a day at most.
_timeout = _number(float, 0.1, 86400)


@dataclass(frozen=True)
class Config:
    # --- the data path -----------------------------------------------------------------------
    listen: HostPort = env("LB_LISTEN", "0.0.0.0:8080", _listen,
                           "Address the proxy listens on for client traffic.")
    admin_listen: HostPort = env("LB_ADMIN_LISTEN", "0.0.0.0:8081", _listen,
                                 "Address of the admin port (/healthz, /metrics, /status).")
    backends: tuple[HostPort, ...] = env("LB_BACKENDS", "", _backends,
                                         "Static backends host:port,host:port (no Swarm).")
    upstream_timeout: float = env("LB_UPSTREAM_TIMEOUT", "60", _timeout,
                                  "Seconds to wait for a backend's response headers (then 504).")
    stall_after: float = env("LB_STALL_AFTER", "2", _timeout,
                             "Seconds a backend may owe a response head while it finishes nothing and the "
                             "others do (and at least 10x its latency) before its unanswered idempotent "
                             "requests are retried elsewhere.")
    connect_timeout: float = env("LB_CONNECT_TIMEOUT", "5", _number(float, 0.01, 3600),
                                 "Seconds to wait for a TCP connection to a backend.")
    drain_timeout: float = env("LB_DRAIN_TIMEOUT", "30", _number(float, 0, 86400),
                               "Seconds to let in-flight requests finish after SIGTERM.")
    max_header_bytes: int = env("LB_MAX_HEADER_BYTES", "65536", _number(int, 1024, 1048576),
                                "Largest request head (and trailers, and response head) accepted; "
                                "larger gets 431 (a response's, 502).")
    idle_timeout: float = env("LB_IDLE_TIMEOUT", "75", _timeout,
                              "Seconds an idle client keep-alive connection is kept open.")
    body_timeout: float = env("LB_BODY_TIMEOUT", "60", _timeout,
                              "Seconds between two reads of a request body before 408 (nginx's client_body_timeout).")
    read_timeout: float = env("LB_READ_TIMEOUT", "60", _timeout,
                              "Seconds a backend may go without sending (mid-response) or taking the body "
                              "before the request is cut (504 when nothing was sent yet).")
    send_timeout: float = env("LB_SEND_TIMEOUT", "60", _timeout,
                              "Seconds a client may go without reading a response before it is cut.")
    tunnel_timeout: float = env("LB_TUNNEL_TIMEOUT", "3600", _timeout,
                                "Seconds an upgraded connection (WebSocket) may pass no byte either way before "
                                "both sides are closed (HAProxy's timeout tunnel).")
    retry_budget: float = env("LB_RETRY_BUDGET", "0.2", _number(float, 0, 1),
                              "Retries in progress allowed beyond the requests a backend held when it broke, "
                              "as a share of requests in flight (Envoy's budget).")
    eject_after: int = env("LB_EJECT_AFTER", "5", _number(int, 1, 1000),
                           "Consecutive failures that eject a backend for a while.")
    eject_base: float = env("LB_EJECT_BASE", "5", _number(float, 0.1, 3600),
                            "Seconds of the first ejection; doubles on each repeat.")
    admin_token: str = env("LB_ADMIN_TOKEN", "", _token,
                           "Bearer token /status and /metrics require when set (/healthz stays open).")
    admin_timeout: float = env("LB_ADMIN_TIMEOUT", "10", _number(float, 0.1, 3600),
                               "Seconds an admin connection may stay silent or take to send a request head.")

    # --- deciding: the control loop and its policy -------------------------------------------
    policy: str = env("LB_POLICY", "concurrency", _policy,
                      "Scaling policy: concurrency, rps, latency, step, hpa, or module:attr.")
    # The scaling settings come from the one list, policies/settings.py (variable, default, range, help).
    target_inflight: float = scaling("target_inflight")
    target_rps: float = scaling("target_rps")
    target_p95_ms: float = scaling("target_p95_ms")
    stable_window: float = scaling("stable_window")
    panic_window: float = scaling("panic_window")
    scale_interval: float = scaling("scale_interval")
    min_replicas: int = scaling("min_replicas")
    max_replicas: int = scaling("max_replicas")
    max_scale_up_rate: float = scaling("max_scale_up_rate")
    max_scale_down_rate: float = scaling("max_scale_down_rate")
    scale_to_zero_after: float = scaling("scale_to_zero_after")
    cold_start_s: float = scaling("cold_start_s")
    lead_s: float | None = scaling("lead_s")
    panic_threshold: float = scaling("panic_threshold")
    panic_hold_s: float | None = scaling("panic_hold_s")
    trend_window_s: float | None = scaling("trend_window_s")
    noise_sigmas: float = scaling("noise_sigmas")
    scale_up_persist_s: float | None = scaling("scale_up_persist_s")
    scale_down_delay_s: float = scaling("scale_down_delay_s")
    step_size: int = scaling("step_size")
    step_up_at: float = scaling("step_up_at")
    step_down_at: float = scaling("step_down_at")
    step_cooldown_s: float = scaling("step_cooldown_s")
    hpa_tolerance: float = scaling("hpa_tolerance")
    hpa_period_s: float = scaling("hpa_period_s")
    hpa_downscale_stabilization_s: float = scaling("hpa_downscale_stabilization_s")
    latency_down_at: float = scaling("latency_down_at")
    latency_up_cooldown_s: float = scaling("latency_up_cooldown_s")
    latency_down_cooldown_s: float | None = scaling("latency_down_cooldown_s")

    # --- acting: the Swarm ------------------------------------------------------------------
    service: str = env("LB_SERVICE", "", _text,
                       "Swarm service to balance and scale (short stack name or full name).")
    stack: str = env("LB_STACK", "", _text,
                     "With LB_SERVICE empty: balance only the labelled services of this stack.")
    backend_port: int = env("LB_BACKEND_PORT", "8000", _port,
                            "Port the service's tasks listen on.")
    network: str = env("LB_NETWORK", "", _text,
                       "Network shared with the service's tasks, when there are several.")
    docker_host: str = env("LB_DOCKER_HOST", "unix:///var/run/docker.sock", _nonblank,
                           "Docker engine API address.")
    discovery_interval: float = env("LB_DISCOVERY_INTERVAL", "1", _number(float, 0.1, 3600),
                                    "Seconds between looks at the service's tasks.")
    docker_timeout: float = env("LB_DOCKER_TIMEOUT", "5", _number(float, 0.01, 3600),
                                "Seconds to wait for one Docker engine API call.")

    log_level: str = env("LB_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"),
                         "Log level; logs are one JSON object per line on stderr.")

    # --- holding requests through a cold start (lb/routing/hold.py) ---------------------------
    hold_max: int = env("LB_HOLD_MAX", "1000", _number(int, 0, 1_000_000),
                        "Requests held per service while it has no ready backend (cold start); more get 503.")
    hold_timeout: float = env("LB_HOLD_TIMEOUT", "60", _number(float, 0, 3600, low_open=True),
                              "Seconds a request is held waiting for a ready backend (then 504).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read every variable once. Raises ConfigError naming the first bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            raw = environ.get(meta["env"])
            if raw is None:   # unset means the default; set but blank is an error (unless blank means "none")
                raw = meta["default"]
            try:
                values[f.name] = meta["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{meta['env']}={raw!r}: {exc}") from None
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ConfigError(
                f"LB_MIN_REPLICAS={self.min_replicas}: expects a value <= LB_MAX_REPLICAS ({self.max_replicas})")
        if self.panic_window > self.stable_window:
            raise ConfigError(
                f"LB_PANIC_WINDOW={self.panic_window:g}: expects a value <= LB_STABLE_WINDOW ({self.stable_window:g})")
        if self.step_down_at >= self.step_up_at:
            raise ConfigError(
                f"LB_STEP_DOWN_AT={self.step_down_at:g}: expects a value < LB_STEP_UP_AT ({self.step_up_at:g})")
        if self.backends and self.service:
            raise ConfigError("LB_BACKENDS: expects to be empty when LB_SERVICE is set (choose one)")

    @property
    def swarm_mode(self) -> bool:
        return bool(self.service)

    @property
    def labels_mode(self) -> bool:
        """No LB_SERVICE and no LB_BACKENDS: serve every service labelled swarmscale.enable=true."""
        return not self.service and not self.backends

    def policy_settings(self) -> dict[str, float]:
        """What a policy may read: plain numbers, so `policies` stays free of `lb`."""
        values = {s.name: getattr(self, s.name) for s in SETTINGS}
        return {name: value for name, value in values.items() if value is not None}


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every option: the README's table is checked against it."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in dataclasses.fields(Config)]


def variable_ranges() -> dict[str, str]:
    """Variable -> its range ("0.1–86400"), from the parser that enforces it: the README shows these."""
    ranges = {f.metadata["env"]: f.metadata["parse"].range for f in dataclasses.fields(Config)
              if hasattr(f.metadata["parse"], "range")}
    ranges.update((s.env, s.range) for s in SETTINGS_BY_NAME.values())   # the scaling settings' own
    return ranges
