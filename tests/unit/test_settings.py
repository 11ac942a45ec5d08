"""The one list of scaling settings: labels, parsing, and what the config and the policies read from it."""

import pytest

from lb.config import Config, ConfigError
from policies import PolicyError, make
from policies.settings import BY_NAME, SETTINGS, defaults, label_name, parse_labels, value


@pytest.mark.parametrize("given, label", [
    ("LB_TARGET_INFLIGHT", "swarmscale.target-inflight"),
    ("LB_HPA_DOWNSCALE_STABILIZATION_S", "swarmscale.hpa-downscale-stabilization-s"),
    (BY_NAME["scale_to_zero_after"], "swarmscale.scale-to-zero-after"),
])
def test_label_name(given, label):
    assert label_name(given) == label


def test_every_setting_has_a_variable_a_label_and_a_valid_default():
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:
        assert s.env == "LB_" + s.name.upper() and s.label.startswith("swarmscale.")
        assert s.help and s.used_by
        assert s.default == "" or s.parse(s.default) is not None


def test_labels_are_parsed_with_the_same_ranges():
    labels = {"swarmscale.target-inflight": "8", "swarmscale.min-replicas": "0", "com.docker.stack": "x",
              "swarmscale.lead-s": ""}
    assert parse_labels(labels) == {"target_inflight": 8.0, "min_replicas": 0}
    with pytest.raises(ValueError) as info:
        parse_labels({"swarmscale.min-replicas": "-1"})
    assert str(info.value) == "swarmscale.min-replicas='-1': expects an integer >= 0 and <= 10000"


@pytest.mark.parametrize("env, variable", [
    ({"LB_COLD_START_S": "-1"}, "LB_COLD_START_S"),
    ({"LB_LEAD_S": "soon"}, "LB_LEAD_S"),
    ({"LB_PANIC_THRESHOLD": "0.5"}, "LB_PANIC_THRESHOLD"),
    ({"LB_STEP_SIZE": "1.5"}, "LB_STEP_SIZE"),
    ({"LB_HPA_TOLERANCE": "2"}, "LB_HPA_TOLERANCE"),
    ({"LB_STEP_DOWN_AT": "0.9"}, "LB_STEP_DOWN_AT"),
    ({"LB_LATENCY_DOWN_AT": "0"}, "LB_LATENCY_DOWN_AT"),
])
def test_bad_scaling_variables_name_themselves_in_one_line(env, variable):
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    assert message.startswith(variable + "=") and "expects" in message and "\n" not in message


def test_the_config_passes_every_set_setting_to_the_policy():
    config = Config.from_env({"LB_LEAD_S": "3", "LB_HPA_PERIOD_S": "30", "LB_MIN_REPLICAS": "0"})
    settings = config.policy_settings()
    assert settings["lead_s"] == 3.0 and settings["hpa_period_s"] == 30.0 and settings["min_replicas"] == 0
    assert "panic_hold_s" not in settings  # derived when unset
    assert Config.from_env({}).policy_settings() == defaults()
    assert (config.min_replicas, config.stable_window) == (0, 60.0)


def test_policies_read_the_lists_defaults_and_ranges():
    assert value({}, "hpa_period_s") == 15.0
    assert value({}, "lead_s", derived=7.0) == 7.0
    assert value({"step_size": 2.0}, "step_size") == 2.0
    with pytest.raises(PolicyError, match="setting panic_threshold=0.5: expects a number >= 1"):
        make("concurrency", {"panic_threshold": 0.5})
    assert make("hpa", {}).period == 15.0
