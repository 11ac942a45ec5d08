"""Pluggable, pure scaling decisions. Imports nothing from the I/O side (`lb`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from policies.base import Decision, Policy, PolicyError, Settings, Snapshot

__all__ = ["Decision", "Policy", "PolicyError", "Settings", "Snapshot", "BUILTIN", "resolve", "make"]

# name -> "module:factory"; each factory takes the settings mapping and returns a Policy.
BUILTIN: Mapping[str, str] = MappingProxyType({
    "concurrency": "policies.concurrency:ConcurrencyPolicy",
    "rps": "policies.rps:RpsPolicy",
    "latency": "policies.latency:LatencyPolicy",
    "step": "policies.step:StepPolicy",
    "hpa": "policies.hpa:HpaPolicy",
})


def resolve(name: str) -> Callable[..., Any]:
    """The factory for a built-in name or a user's `module:attr`. Raises PolicyError."""
    target = BUILTIN.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PolicyError(f"expects one of {', '.join(BUILTIN)} or module:attr")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyError(f"cannot import {module_name!r} ({exc})") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise PolicyError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise PolicyError(f"{target} is not callable")
    return factory


def make(name: str, settings: Settings) -> Policy:
    """Build a policy from its name and the settings (see lb.config.Config.policy_settings)."""
    return resolve(name)(settings)
