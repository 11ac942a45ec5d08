"""Config parsing: defaults, good values, and one clear line naming each bad variable."""

from __future__ import annotations

import pytest

from lb.config import Config, ConfigError, HostPort, documented_variables, variable_ranges


def test_defaults():
    config = Config.from_env({})
    assert config.listen == HostPort("0.0.0.0", 8080)
    assert config.admin_listen == HostPort("0.0.0.0", 8081)
    assert config.backends == ()
    assert (config.upstream_timeout, config.drain_timeout) == (60.0, 30.0)
    assert not config.swarm_mode


@pytest.mark.parametrize("env, field, expected", [
    ({"LB_LISTEN": "127.0.0.1:9000"}, "listen", HostPort("127.0.0.1", 9000)),
    ({"LB_LISTEN": "[::1]:9000"}, "listen", HostPort("::1", 9000)),
    ({"LB_BACKENDS": "a:1, b:2,"}, "backends", (HostPort("a", 1), HostPort("b", 2))),
    ({"LB_UPSTREAM_TIMEOUT": "0.5"}, "upstream_timeout", 0.5),
    ({"LB_DRAIN_TIMEOUT": "0"}, "drain_timeout", 0.0),
    ({"LB_RETRY_BUDGET": "1"}, "retry_budget", 1.0),
    ({"LB_EJECT_AFTER": "3"}, "eject_after", 3),
    ({"LB_LOG_LEVEL": "DEBUG"}, "log_level", "debug"),
    ({"LB_BACKENDS": ""}, "backends", ()),                      # empty means none: blank is meaningful here
    ({"LB_ADMIN_TOKEN": ""}, "admin_token", ""),
    ({"LB_ADMIN_LISTEN": "127.0.0.1:0"}, "admin_listen", HostPort("127.0.0.1", 0)),   # any free port
])
def test_good_values(env, field, expected):
    assert getattr(Config.from_env(env), field) == expected


@pytest.mark.parametrize("env, variable", [
    ({"LB_LISTEN": "8080"}, "LB_LISTEN"),
    ({"LB_LISTEN": "host:99999"}, "LB_LISTEN"),
    ({"LB_ADMIN_LISTEN": "x:y"}, "LB_ADMIN_LISTEN"),
    ({"LB_BACKENDS": "a:1,b"}, "LB_BACKENDS"),
    ({"LB_UPSTREAM_TIMEOUT": "soon"}, "LB_UPSTREAM_TIMEOUT"),
    ({"LB_UPSTREAM_TIMEOUT": "0"}, "LB_UPSTREAM_TIMEOUT"),
    ({"LB_UPSTREAM_TIMEOUT": "nan"}, "LB_UPSTREAM_TIMEOUT"),
    ({"LB_DRAIN_TIMEOUT": "-1"}, "LB_DRAIN_TIMEOUT"),
    ({"LB_MAX_HEADER_BYTES": "10"}, "LB_MAX_HEADER_BYTES"),
    ({"LB_RETRY_BUDGET": "2"}, "LB_RETRY_BUDGET"),
    ({"LB_EJECT_AFTER": "0"}, "LB_EJECT_AFTER"),
    ({"LB_LOG_LEVEL": "loud"}, "LB_LOG_LEVEL"),
    ({"LB_POLICY": "no-such-policy"}, "LB_POLICY"),
    ({"LB_MIN_REPLICAS": "5", "LB_MAX_REPLICAS": "2"}, "LB_MIN_REPLICAS"),
    ({"LB_BACKENDS": "a:1", "LB_SERVICE": "web"}, "LB_BACKENDS"),
    # Issue 10: blank is not the default, numbers are plain ASCII within a range, lists are lists.
    ({"LB_LISTEN": ""}, "LB_LISTEN"),
    ({"LB_UPSTREAM_TIMEOUT": " "}, "LB_UPSTREAM_TIMEOUT"),
    ({"LB_LOG_LEVEL": ""}, "LB_LOG_LEVEL"),
    ({"LB_POLICY": ""}, "LB_POLICY"),
    ({"LB_DOCKER_HOST": ""}, "LB_DOCKER_HOST"),
    ({"LB_MAX_HEADER_BYTES": "1_000_000"}, "LB_MAX_HEADER_BYTES"),
    ({"LB_MAX_HEADER_BYTES": "\uff16\uff15\uff15\uff13\uff16"}, "LB_MAX_HEADER_BYTES"),   # full-width 65536
    ({"LB_MAX_HEADER_BYTES": "100000000000"}, "LB_MAX_HEADER_BYTES"),
    ({"LB_IDLE_TIMEOUT": "1e-320"}, "LB_IDLE_TIMEOUT"),
    ({"LB_TARGET_INFLIGHT": "1e-320"}, "LB_TARGET_INFLIGHT"),
    ({"LB_BODY_TIMEOUT": "0.001"}, "LB_BODY_TIMEOUT"),
    ({"LB_READ_TIMEOUT": "1e9"}, "LB_READ_TIMEOUT"),
    ({"LB_SEND_TIMEOUT": "inf"}, "LB_SEND_TIMEOUT"),
    ({"LB_BACKENDS": ",,,"}, "LB_BACKENDS"),
    ({"LB_BACKENDS": "a:0"}, "LB_BACKENDS"),
    ({"LB_BACKENDS": "a:1 b:2"}, "LB_BACKENDS"),
    ({"LB_LISTEN": "0.0.0.0:65536"}, "LB_LISTEN"),
    ({"LB_LISTEN": "0.0.0.0:\uff18\uff10"}, "LB_LISTEN"),
    ({"LB_POLICY": "json:dumps"}, "LB_POLICY"),
    ({"LB_POLICY": "lb.config:Config"}, "LB_POLICY"),
    ({"LB_ADMIN_TOKEN": "two words"}, "LB_ADMIN_TOKEN"),
])
def test_bad_values_name_the_variable_in_one_line(env, variable):
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    assert message.startswith(variable) and "expects" in message and "\n" not in message


def test_every_data_path_number_has_a_range():
    ranges = variable_ranges()
    for name in ("LB_UPSTREAM_TIMEOUT", "LB_CONNECT_TIMEOUT", "LB_DRAIN_TIMEOUT", "LB_MAX_HEADER_BYTES",
                 "LB_IDLE_TIMEOUT", "LB_BODY_TIMEOUT", "LB_READ_TIMEOUT", "LB_SEND_TIMEOUT", "LB_TUNNEL_TIMEOUT",
                 "LB_STALL_AFTER", "LB_RETRY_BUDGET", "LB_EJECT_AFTER", "LB_EJECT_BASE", "LB_ADMIN_TIMEOUT",
                 "LB_BACKEND_PORT", "LB_DISCOVERY_INTERVAL", "LB_DOCKER_TIMEOUT"):
        assert name in ranges, name
    assert ranges["LB_BODY_TIMEOUT"] == "0.1–86400"


def test_every_variable_is_documented():
    names = [name for name, _, doc in documented_variables() if doc]
    assert len(names) == len(set(names)) and all(n.startswith("LB_") for n in names)
