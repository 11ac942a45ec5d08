"""Rules, the route table and service labels: table-driven, no I/O."""

from __future__ import annotations

import pytest

from lb.clock import FakeClock
from lb.config import Config
from lb.routing.labels import LabelError, documented_labels, label_name, parse_labels, scaling_fields
from lb.routing.route import Route
from lb.routing.rules import RuleError, normalize_host, parse_rule
from lb.routing.table import RouteTable, split_target

RULES = [
    # rule, host, path, matches
    ("Host(`a.test`)", "a.test", "/", True),
    ("Host(`A.Test`)", "a.test", "/x", True),
    ("Host(`a.test`)", "b.test", "/", False),
    ("Host(`a.test`, `b.test`)", "b.test", "/", True),
    ("PathPrefix(`/api`)", "x", "/api/v1", True),
    ("PathPrefix(`/api`)", "x", "/ap", False),
    ("Path(`/x`)", "x", "/x", True),
    ("Path(`/x`)", "x", "/x/y", False),
    ("Host(`b.test`) && PathPrefix(`/api`)", "b.test", "/api/q", True),
    ("Host(`b.test`) && PathPrefix(`/api`)", "b.test", "/", False),
    ("Host(`a`) || Host(`b`)", "b", "/", True),
    ("!Host(`a`)", "b", "/", True),
    ("!Host(`a`)", "a", "/", False),
    ("Host(`a`) && !(Path(`/x`) || PathPrefix(`/y`))", "a", "/z", True),
    ("Host(`a`) && !(Path(`/x`) || PathPrefix(`/y`))", "a", "/y1", False),
    ('Host("a") && Path("/q")', "a", "/q", True),
    ("Host(`a`) || Host(`b`) && Path(`/p`)", "a", "/other", True),    # && binds tighter than ||
    ("(Host(`a`) || Host(`b`)) && Path(`/p`)", "a", "/other", False),
]


@pytest.mark.parametrize(("rule", "host", "path", "matches"), RULES)
def test_rules_match_as_traefik_does(rule, host, path, matches):
    assert parse_rule(rule).match(host, path) is matches


@pytest.mark.parametrize(("rule", "hosts"), [
    ("Host(`a`)", {"a"}), ("Host(`a`) && PathPrefix(`/p`)", {"a"}), ("Host(`a`) || Host(`b`)", {"a", "b"}),
    ("Host(`a`) || PathPrefix(`/p`)", None), ("!Host(`a`)", None), ("PathPrefix(`/`)", None),
    ("(Host(`a`) || Host(`b`)) && Host(`b`)", {"b"}),
])
def test_a_rule_knows_which_hosts_it_can_match(rule, hosts):
    found = parse_rule(rule).hosts
    assert (None if found is None else set(found)) == hosts


@pytest.mark.parametrize("bad", ["", "Host", "Host(a)", "Host(`a`", "Host(`a`) &&", "Hots(`a`)",
                                 "Host(`a`) Host(`b`)", "PathPrefix(`api`)", "Host(``)", "Host(`a`) & Path(`/`)"])
def test_bad_rules_say_why(bad):
    with pytest.raises(RuleError):
        parse_rule(bad)


@pytest.mark.parametrize(("raw", "host"), [("A.test:8080", "a.test"), ("a.test", "a.test"),
                                           ("[::1]:80", "[::1]"), ("[::1]", "[::1]")])
def test_host_ignores_case_and_port(raw, host):
    assert normalize_host(raw) == host


def test_split_target():
    assert split_target(b"/a/b?q=1") == (None, "/a/b")
    assert split_target(b"http://X.test:81/p?q") == ("x.test", "/p")


def table(*routes: tuple[str, str, int | None]) -> RouteTable:
    config, clock = Config.from_env({}), FakeClock()
    t = RouteTable()
    for name, rule, priority in routes:
        t.put(Route(name, config, clock, rule=parse_rule(rule), priority=priority))
    return t


def name(route: Route | None) -> str | None:
    return None if route is None else route.name


def test_the_longer_rule_wins_unless_a_priority_says_otherwise():
    t = table(("site", "Host(`site.test`)", None), ("api", "Host(`site.test`) && PathPrefix(`/api`)", None),
              ("any", "PathPrefix(`/`)", None))
    assert name(t.match("site.test", "/api/x")) == "api"
    assert name(t.match("site.test", "/x")) == "site"    # 17 characters beat PathPrefix(`/`)'s 15
    assert name(t.match("other", "/x")) == "any"        # routes without a host apply to every host
    t = table(("site", "Host(`a.test`)", 100), ("api", "Host(`a.test`) && PathPrefix(`/api`)", None))
    assert name(t.match("a.test", "/api/x")) == "site"
    assert t.single is None


def test_no_match_is_none_and_one_catch_all_route_needs_no_lookup():
    t = table(("alpha", "Host(`alpha.test`)", None))
    assert t.match("beta.test", "/") is None
    route, host, path = t.match_request(b"/p?x", [(b"HOST", b"Alpha.Test:8080")])
    assert name(route) == "alpha" and (host, path) == ("alpha.test", "/p")
    single = RouteTable()
    single.put(Route("web", Config.from_env({}), FakeClock()))
    assert single.single is not None and single.single.name == "web"


# --- labels ------------------------------------------------------------------------------------
BASE = Config.from_env({})


def test_labels_give_the_rule_port_priority_and_scaling_overrides():
    spec = parse_labels({"swarmscale.enable": "true", "swarmscale.rule": "Host(`v.test`)", "swarmscale.port": "80",
                         "swarmscale.priority": "5", "swarmscale.min-replicas": "2",
                         "swarmscale.target-inflight": "4", "swarmscale.policy": "rps"}, BASE, "vote")
    assert spec.rule.text == "Host(`v.test`)" and spec.port == 80 and spec.priority == 5 and spec.scale
    config = spec.config(BASE, "shop_vote")
    assert (config.service, config.backend_port, config.min_replicas, config.target_inflight, config.policy) == (
        "shop_vote", 80, 2, 4.0, "rps")
    assert config.max_replicas == BASE.max_replicas     # what no label says stays the balancer's


def test_defaults_host_of_the_service_name_and_scale_false():
    spec = parse_labels({"swarmscale.enable": "true", "swarmscale.scale": "false"}, BASE, "vote")
    assert spec.rule.text == "Host(`vote`)" and spec.port == BASE.backend_port and not spec.scale


@pytest.mark.parametrize(("labels", "names"), [
    ({"swarmscale.rule": "Host(a)"}, "swarmscale.rule"),
    ({"swarmscale.port": "0"}, "swarmscale.port"),
    ({"swarmscale.priority": "high"}, "swarmscale.priority"),
    ({"swarmscale.scale": "maybe"}, "swarmscale.scale"),
    ({"swarmscale.min-replicas": "-1"}, "swarmscale.min-replicas"),
    ({"swarmscale.min-replicas": "20"}, "swarmscale.min-replicas"),      # above the balancer's max
    ({"swarmscale.policy": "nope"}, "swarmscale.policy"),
    ({"swarmscale.target-inflight": "zero"}, "swarmscale.target-inflight"),
])
def test_invalid_labels_name_the_label(labels, names):
    with pytest.raises(LabelError) as info:
        parse_labels({"swarmscale.enable": "true", **labels}, BASE, "svc")
    assert str(info.value).startswith(names)


def test_unknown_labels_are_reported_not_fatal():
    spec = parse_labels({"swarmscale.enable": "true", "swarmscale.max-replica": "3", "swarmscale.test": "x"},
                        BASE, "svc")
    assert spec.ignored == ("swarmscale.max-replica", "swarmscale.test")


def test_scaling_labels_are_derived_from_the_variables():
    assert label_name("LB_TARGET_INFLIGHT") == "swarmscale.target-inflight"
    labels = scaling_fields()
    for wanted in ("swarmscale.policy", "swarmscale.min-replicas", "swarmscale.max-replicas",
                   "swarmscale.target-inflight", "swarmscale.target-rps", "swarmscale.target-p95-ms",
                   "swarmscale.stable-window", "swarmscale.panic-window", "swarmscale.scale-to-zero-after"):
        assert wanted in labels
    assert {label for label, _ in documented_labels()} >= set(labels)
