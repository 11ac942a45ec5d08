"""The registry: names, user policies as module:attr, and clear errors."""

import pytest

from policies import BUILTIN, Decision, PolicyError, Snapshot, make, resolve

SETTINGS = {"target_inflight": 10, "target_rps": 50, "target_p95_ms": 250, "stable_window": 60,
            "panic_window": 6, "scale_interval": 2, "max_scale_up_rate": 1000, "max_scale_down_rate": 2}


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_builds_and_holds_without_data(name):
    policy = make(name, SETTINGS)
    assert policy.name == name
    empty = Snapshot(now=0.0, replicas=3, ready_replicas=3, stable_inflight=None, panic_inflight=None,
                     stable_rps=None, panic_rps=None)
    decision, _ = policy.decide(empty, policy.initial_state())
    assert decision.replicas == 3
    assert "no " in decision.reason


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_accepts_empty_settings(name):
    assert make(name, {}).name == name


@pytest.mark.parametrize("name, message", [
    ("nope", "expects one of concurrency, rps, latency, step, hpa or module:attr"),
    ("", "expects one of"),
    ("no_such_module_xyz:Policy", "cannot import 'no_such_module_xyz'"),
    ("policies.concurrency:Nope", "module 'policies.concurrency' has no attribute 'Nope'"),
    ("policies.concurrency:math", "is not callable"),
])
def test_bad_names_raise_policy_error_with_a_clear_message(name, message):
    with pytest.raises(PolicyError) as caught:
        resolve(name)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(PolicyError):
        make(name, SETTINGS)


@pytest.mark.parametrize("settings, message", [
    ({"target_inflight": 0}, "target_inflight=0: expects a number > 0"),
    ({"target_inflight": "ten"}, "target_inflight='ten': expects a number"),
    ({"stable_window": -1}, "stable_window=-1"),
])
def test_bad_settings_raise_policy_error(settings, message):
    with pytest.raises(PolicyError) as caught:
        make("concurrency", settings)
    assert message in str(caught.value)


def test_a_user_policy_loads_by_module_attr():
    policy = make("policies.examples.headroom:Headroom", SETTINGS)
    s = Snapshot(now=10.0, replicas=1, ready_replicas=1, stable_inflight=20.0, panic_inflight=20.0,
                 stable_rps=200.0, panic_rps=200.0)
    decision, state = policy.decide(s, policy.initial_state())
    assert decision == Decision(3, "20.0 in flight / 8 -> 3")

