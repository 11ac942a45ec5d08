"""Service labels: the one place that defines, parses and validates them.

A Swarm service joins the balancer (with LB_SERVICE empty) through its `deploy.labels`:
`swarmscale.enable=true`, `swarmscale.rule` (a Traefik-style rule), `swarmscale.port`,
`swarmscale.priority`, `swarmscale.scale=false`, and one label per scaling setting, derived from
its variable's name (`LB_TARGET_INFLIGHT` -> `swarmscale.target-inflight`) and parsed with the
variable's own parser, so its range is the same. An unknown `swarmscale.*` label is not an error
(other tools, and the project's tests, put their own there) but is reported (`ignored`), so a typo
is logged rather than silently meaning the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lb.config import Config, ConfigError
from lb.routing.rules import Rule, RuleError, parse_rule
from policies.settings import SETTINGS, label_name

PREFIX = "swarmscale."
ENABLE = PREFIX + "enable"
RULE = PREFIX + "rule"
PORT = PREFIX + "port"
PRIORITY = PREFIX + "priority"
SCALE = PREFIX + "scale"


class LabelError(ValueError):
    """An invalid label; str(e) names it and says what it expects."""


@cache
def scaling_fields() -> dict[str, dataclasses.Field[Any]]:
    """Label -> Config field, for every setting a policy or the control loop reads.

    Derived from the one list of settings (policies/settings.py, plus the policy's name), never
    listed twice; each field's parser is the setting's own, so a label takes the variable's range.
    """
    keys = {"policy", *(s.name for s in SETTINGS)}
    return {label_name(f.metadata["env"]): f for f in dataclasses.fields(Config) if f.name in keys}


def _bool(label: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise LabelError(f"{label}={value!r}: expects true or false")


def _int(label: str, value: str, low: int, high: int) -> int:
    text = value.strip()
    if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()):
        raise LabelError(f"{label}={value!r}: expects an integer between {low} and {high}")
    number = int(text)
    if not low <= number <= high:
        raise LabelError(f"{label}={value!r}: expects an integer between {low} and {high}")
    return number


def enabled(labels: Mapping[str, str]) -> bool:
    """Whether the service asks to be balanced (an invalid value counts as asking: it gets an error)."""
    value = labels.get(ENABLE)
    return value is not None and value.strip().lower() not in ("false", "0", "no")


@dataclass(frozen=True)
class ServiceRoute:
    """What a service's labels say."""

    rule: Rule
    priority: int | None
    port: int
    scale: bool
    overrides: dict[str, Any] = field(default_factory=dict)   # Config field name -> value
    ignored: tuple[str, ...] = field(default=(), compare=False)   # unknown swarmscale.* labels

    def config(self, base: Config, service: str) -> Config:
        """The balancer's settings for this service: base, with the labels' overrides."""
        return dataclasses.replace(base, service=service, backend_port=self.port, **self.overrides)

    def same_service(self, other: ServiceRoute) -> bool:
        """True when only the rule or priority differs (the route's loops can stay as they are)."""
        return (self.port, self.scale, self.overrides) == (other.port, other.scale, other.overrides)


def parse_labels(labels: Mapping[str, str], base: Config, default_host: str) -> ServiceRoute:
    """Validate a service's labels. Raises LabelError naming the first bad one."""
    _bool(ENABLE, labels.get(ENABLE, "true"))
    fields = scaling_fields()
    known = {ENABLE, RULE, PORT, PRIORITY, SCALE, *fields}
    ignored = tuple(sorted(n for n in labels if n.startswith(PREFIX) and n not in known))
    text = labels.get(RULE, f"Host(`{default_host}`)")
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        raise LabelError(f"{RULE}={text!r}: {exc}") from None
    priority = _int(PRIORITY, labels[PRIORITY], -(2 ** 31), 2 ** 31) if PRIORITY in labels else None
    port = _int(PORT, labels[PORT], 1, 65535) if PORT in labels else base.backend_port
    scale = _bool(SCALE, labels[SCALE]) if SCALE in labels else True
    overrides: dict[str, Any] = {}
    for label, f in fields.items():
        if label in labels:
            try:
                value = f.metadata["parse"](labels[label])
            except ValueError as exc:
                raise LabelError(f"{label}={labels[label]!r}: {exc}") from None
            if value is not None:   # an empty label of a derived setting: derived, as unset
                overrides[f.name] = value
    route = ServiceRoute(rule, priority, port, scale, overrides, ignored)
    config = route.config(base, "check")
    try:
        config._check()
    except ConfigError as exc:   # e.g. min > max: name the labels, not the variables
        message = str(exc)
        for label, f in sorted(fields.items(), key=lambda item: -len(item[1].metadata["env"])):
            message = message.replace(f.metadata["env"], label)
        raise LabelError(message) from None
    return route


def documented_labels() -> list[tuple[str, str]]:
    """(label, description) for every label: the README's table is checked against it."""
    rows = [(ENABLE, "`true` to be balanced by a balancer whose LB_SERVICE is empty."),
            (RULE, "Traefik-style rule: Host, Path, PathPrefix, combined with && (and), a double bar (or), ! (not) "
                   "and parentheses (default: Host(`<service name>`))."),
            (PORT, "Port the service's tasks listen on (default: LB_BACKEND_PORT)."),
            (PRIORITY, "Integer; the higher wins where rules overlap (default: the rule's length)."),
            (SCALE, "`false` balances the service without scaling it.")]
    rows += [(label, f"Overrides `{f.metadata['env']}` for this service.") for label, f in scaling_fields().items()]
    return rows
