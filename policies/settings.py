"""The one list of scaling settings: every number a policy or the control loop reads.

Each setting has a name (the key in the settings mapping a policy gets), a default, a range and a
help text, and says who reads it. Everything else is derived from this list, never written twice:
- the environment variable: `LB_` + the name in capitals (`target_inflight` -> `LB_TARGET_INFLIGHT`);
- the per-service label: `label_name(...)` (`LB_TARGET_INFLIGHT` -> `swarmscale.target-inflight`);
- `lb.config.Config` reads each variable with `Setting.parse` (same range, same one-line error);
- the simulator's flags and defaults, `deploy/stack.yml`'s `${VAR:-default}` lines and the README's
  table (tests/unit/test_docs.py keeps the last two in step with this list).

A setting whose default is empty is derived from others when not set (`lead_s` from the cold start,
the interval and the panic window); a policy reads it with `value(settings, name, derived)`.
Pure: no I/O, nothing from `lb`.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.base import PolicyError

LOOP = "loop"  # the control loop (and the simulator's model) reads it, whatever the policy
# Plain ASCII numbers only: float() also takes "1_000", full-width digits and "inf", nobody's intent.
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
WINDOWED = ("concurrency", "rps")


@dataclass(frozen=True)
class Setting:
    name: str                 # key in the settings mapping, and Config attribute
    default: str              # as written in the environment; "" = derived from others when unset
    help: str
    used_by: tuple[str, ...]  # policy names, and LOOP
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False    # low itself is not allowed (> low rather than >= low)

    @property
    def env(self) -> str:
        return "LB_" + self.name.upper()

    @property
    def label(self) -> str:
        return label_name(self)

    @property
    def range(self) -> str:
        """As the README shows it: "1–86400", or ">0–1000" when the low end itself is excluded."""
        return f"{'>' if self.low_open else ''}{_plain(self.low)}–{_plain(self.high)}"

    @property
    def expects(self) -> str:
        what = "an integer" if self.integer else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        return f"expects {what}" + (f" {' and '.join(bounds)}" if bounds else "")

    def parse(self, text: str) -> float | int | None:
        """The value of `text` (None for an empty text when the default is derived).

        Raises ValueError whose message is what it expects, e.g. "expects a number > 0".
        """
        text = text.strip()
        if not text and self.default == "":
            return None          # blank means "derived" only where the default is derived
        if not (_INT if self.integer else _FLOAT).fullmatch(text):
            raise ValueError(self.expects)
        number: float | int = int(text) if self.integer else float(text)
        return self.check(number)

    def check(self, number: float | int) -> float | int:
        """`number` when it is within the range; ValueError saying what it expects when not."""
        if math.isnan(number) or math.isinf(number) or (self.integer and number != int(number)):
            raise ValueError(self.expects)
        if number and abs(number) < sys.float_info.min:   # subnormal: 1e-320 is no one's intent
            raise ValueError(self.expects)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            raise ValueError(self.expects)
        if self.high is not None and number > self.high:
            raise ValueError(self.expects)
        return int(number) if self.integer else number

    def default_value(self) -> float | int | None:
        return self.parse(self.default)


def _plain(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


def _s(name: str, default: str, help: str, used_by: tuple[str, ...], **bounds: Any) -> Setting:
    """A setting; every one has a range (issue 10): a day for durations, 10,000 replicas, 10^6 otherwise."""
    if bounds.get("high") is None:
        durations = name.endswith(("_s", "_window", "_interval", "_after"))
        bounds["high"] = 86400 if durations else 10000 if name.endswith("replicas") else 1_000_000
    return Setting(name, default, help, used_by, **bounds)


SETTINGS: tuple[Setting, ...] = (
    _s("target_inflight", "10", "concurrency, step, hpa: in-flight requests wanted per replica.",
       ("concurrency", "step", "hpa"), low=0, low_open=True),
    _s("target_rps", "50", "rps: requests per second wanted per replica.", ("rps",), low=0, low_open=True),
    _s("target_p95_ms", "250", "latency: p95 latency to stay under, in milliseconds.",
       ("latency",), low=0, low_open=True),
    _s("stable_window", "60",
       "Seconds averaged for normal decisions (and before any scale-down after start).",
       (LOOP, "concurrency", "rps", "latency", "step"), low=1),
    _s("panic_window", "6", "Seconds averaged to detect a burst (panic mode).", (LOOP, *WINDOWED), low=1),
    _s("scale_interval", "2", "Seconds between scaling decisions.", (LOOP, *WINDOWED), low=0.1),
    _s("min_replicas", "1", "Fewest replicas the balancer scales the service to (0: scale to zero when idle).",
       (LOOP, *WINDOWED), integer=True, low=0),
    _s("max_replicas", "10", "Most replicas the balancer scales the service to.", (LOOP,), integer=True, low=1),
    _s("max_scale_up_rate", "1000", "Most a decision may multiply the replicas by.",
       (*WINDOWED, "latency"), low=1),
    _s("max_scale_down_rate", "2", "Most a decision may divide the replicas by.", WINDOWED, low=1),
    _s("scale_to_zero_after", "300", "With LB_MIN_REPLICAS=0: idle seconds before the service goes to zero.",
       (LOOP, *WINDOWED), low=0, low_open=True),
    _s("cold_start_s", "5",
       "Seconds from a scale request to a new replica serving, until the balancer has measured one.",
       WINDOWED, low=0),
    _s("lead_s", "",
       "Seconds ahead the trend is projected (empty: cold start + interval + half the panic window).",
       WINDOWED, low=0),
    _s("panic_threshold", "2", "Panic when the panic window wants this many times the ready replicas.",
       WINDOWED, low=1),
    _s("panic_hold_s", "", "Seconds panic lasts after its last trigger (empty: one panic window).",
       WINDOWED, low=0, low_open=True),
    _s("trend_window_s", "",
       "Seconds of panic averages a rise must span to count as a trend (empty: two panic windows).",
       WINDOWED, low=0, low_open=True),
    _s("noise_sigmas", "2",
       "Changes within this many standard deviations of chance (Poisson noise) are not acted on; 0: act on all.",
       WINDOWED, low=0),
    _s("scale_up_persist_s", "",
       "Seconds more replicas must be wanted, within chance, before they are added (empty: one interval).",
       WINDOWED, low=0),
    _s("scale_down_delay_s", "14",
       "Seconds the load must want fewer replicas before they are removed (the most wanted over them is kept).",
       WINDOWED, low=0),
    _s("step_size", "1", "step: replicas added or removed at a time.", ("step",), integer=True, low=1),
    _s("step_up_at", "0.8", "step: share of the target above which it adds replicas.",
       ("step",), low=0, low_open=True),
    _s("step_down_at", "0.3", "step: share of the target below which it removes replicas.",
       ("step",), low=0, low_open=True),
    _s("step_cooldown_s", "30", "step: seconds after a change before the next.", ("step",), low=0, low_open=True),
    _s("hpa_tolerance", "0.1", "hpa: no change while the ratio to the target is within 1 +- this.",
       ("hpa",), low=0, low_open=True, high=1),
    _s("hpa_period_s", "15", "hpa: seconds between its syncs.", ("hpa",), low=0, low_open=True),
    _s("hpa_downscale_stabilization_s", "300",
       "hpa: scale down to the highest recommendation of this many seconds.", ("hpa",), low=0, low_open=True),
    _s("latency_down_at", "0.5", "latency: share of the target p95 below which it removes a replica.",
       ("latency",), low=0, low_open=True, high=1),
    _s("latency_up_cooldown_s", "10", "latency: seconds after a scale-up before the next.",
       ("latency",), low=0, low_open=True),
    _s("latency_down_cooldown_s", "",
       "latency: quiet seconds before removing a replica (empty: the stable window).",
       ("latency",), low=0, low_open=True),
)

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}
BY_ENV: Mapping[str, Setting] = {s.env: s for s in SETTINGS}


def label_name(setting: Setting | str) -> str:
    """The per-service label of a setting: `LB_TARGET_INFLIGHT` -> `swarmscale.target-inflight`.

    Takes a Setting, its variable or its name.
    """
    if isinstance(setting, Setting):
        setting = setting.env
    return "swarmscale." + setting.removeprefix("LB_").lower().replace("_", "-")


BY_LABEL: Mapping[str, Setting] = {label_name(s): s for s in SETTINGS}


def parse_labels(labels: Mapping[str, str]) -> dict[str, float | int]:
    """Settings from a service's labels (`swarmscale.target-inflight=8`), other labels ignored.

    Raises ValueError with one line naming the label: "swarmscale.target-inflight='x': expects ...".
    An empty label of a derived setting means "derived", so it is left out.
    """
    out: dict[str, float | int] = {}
    for label, text in labels.items():
        s = BY_LABEL.get(label)
        if s is None:
            continue
        try:
            number = s.parse(text)
        except ValueError as exc:
            raise ValueError(f"{label}={text!r}: {exc}") from None
        if number is not None:
            out[s.name] = number
    return out


def defaults() -> dict[str, float | int]:
    """Every setting at its default (derived ones left out): the simulator's starting point."""
    out: dict[str, float | int] = {}
    for s in SETTINGS:
        number = s.default_value()
        if number is not None:
            out[s.name] = number
    return out


def value(settings: Mapping[str, Any] | None, name: str, derived: float | None = None) -> float:
    """A policy's read of one setting: the given value, else the list's default (or `derived`).

    Raises PolicyError naming the key when the value is not a number in the setting's range.
    """
    s = BY_NAME[name]
    given = None if settings is None else settings.get(name)
    if given is None:
        default = s.default_value()
        if default is None:
            if derived is None:
                raise PolicyError(f"setting {name}: has no default and nothing to derive it from")
            return float(derived)
        return float(default)
    try:
        return float(s.check(float(given)))
    except (TypeError, ValueError):
        raise PolicyError(f"setting {name}={given!r}: {s.expects}") from None
