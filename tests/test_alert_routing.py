"""The routing tree decides receivers, grouping and timings the way Alertmanager does."""

from __future__ import annotations

import pytest
import yaml

from otel_audio.processors.alerting.model import parse_matcher
from otel_audio.processors.alerting.routing import Route, route_from_config

S = 10**9

# Alertmanager's documentation example (docs/configuration.md), without the time intervals.
DOCS_TREE = yaml.safe_load(
    """
receiver: default-receiver
group_wait: 30s
group_interval: 5m
repeat_interval: 4h
group_by: [cluster, alertname]
routes:
- receiver: database-pager
  group_wait: 10s
  matchers:
  - service=~"mysql|cassandra"
- receiver: frontend-pager
  group_by: [product, environment]
  matchers:
  - team="frontend"
- receiver: dev-pager
  matchers:
  - service="inhouse-service"
  continue: true
- receiver: on-call-pager
  matchers:
  - service="inhouse-service"
"""
)

NESTED_TREE = yaml.safe_load(
    """
receiver: default
routes:
- matchers: ['team="audio"']
  receiver: audio-team
  group_by: [service]
  repeat_interval: 1h
  routes:
  - matchers: ['severity="critical"']
    receiver: audio-pager
    group_wait: 0s
    continue: true
  - matchers: ['service="enhancer"']
    receiver: enhancer-owners
- matchers: ['team=~"audio|video"']
  receiver: media
"""
)


def receivers(route: Route, labels: dict[str, str]) -> list[str]:
    return [r.receiver for r in route.match(labels)]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "Down", "service": "mysql"}, ["database-pager"]),
        ({"alertname": "Down", "service": "cassandra"}, ["database-pager"]),
        ({"alertname": "Down", "team": "frontend"}, ["frontend-pager"]),
        ({"alertname": "Down", "service": "mysql", "team": "frontend"}, ["database-pager"]),
        ({"alertname": "Down", "service": "inhouse-service"}, ["dev-pager", "on-call-pager"]),
        ({"alertname": "Down", "service": "postgres"}, ["default-receiver"]),
        ({}, ["default-receiver"]),
    ],
)
def test_docs_example_tree_sends_each_alert_to_the_documented_receivers(labels, expected):
    assert receivers(route_from_config(DOCS_TREE), labels) == expected


def test_children_inherit_unset_options_and_override_set_ones():
    root = route_from_config(DOCS_TREE)
    database, frontend, dev, _ = root.routes
    assert (database.group_wait_ns, database.group_interval_ns, database.repeat_interval_ns) == (
        10 * S,
        300 * S,
        4 * 3600 * S,
    )
    assert database.group_by == ("cluster", "alertname")
    assert frontend.group_by == ("product", "environment")
    assert frontend.group_wait_ns == 30 * S
    assert dev.continue_ and not frontend.continue_


def test_root_without_timings_takes_alertmanager_defaults():
    root = route_from_config({"receiver": "r"})
    assert (root.group_wait_ns, root.group_interval_ns, root.repeat_interval_ns) == (
        30 * S,
        5 * 60 * S,
        4 * 3600 * S,
    )
    assert root.group_by == ()
    assert root.group_labels({"alertname": "X", "service": "a"}) == {}


def test_grandchild_inherits_through_its_parent():
    root = route_from_config(NESTED_TREE)
    pager = root.routes[0].routes[0]
    assert pager.group_by == ("service",)
    assert pager.repeat_interval_ns == 3600 * S
    assert pager.group_wait_ns == 0
    assert pager.group_interval_ns == 300 * S


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # deepest match wins over its parent
        ({"team": "audio", "service": "enhancer"}, ["enhancer-owners"]),
        # continue on the first grandchild lets the second one match too
        (
            {"team": "audio", "severity": "critical", "service": "enhancer"},
            ["audio-pager", "enhancer-owners"],
        ),
        ({"team": "audio", "severity": "critical"}, ["audio-pager"]),
        # a child matching none of its children takes the alert itself
        ({"team": "audio", "service": "denoiser"}, ["audio-team"]),
        # the first child matched without continue: its later sibling is not tried
        ({"team": "audio"}, ["audio-team"]),
        ({"team": "video"}, ["media"]),
        ({"team": "radio"}, ["default"]),
    ],
)
def test_nested_tree_is_searched_depth_first_with_continue(labels, expected):
    assert receivers(route_from_config(NESTED_TREE), labels) == expected


def test_continue_on_the_last_match_does_not_add_the_parent():
    root = route_from_config({"receiver": "root", "routes": [{"matchers": ["a=1"], "continue": True}]})
    assert receivers(root, {"a": "1"}) == ["root"]
    assert root.match({"a": "1"}) == [root.routes[0]]


def test_route_keys_chain_sorted_matchers_from_the_root():
    root = route_from_config(
        {"receiver": "r", "routes": [{"matchers": ['team="audio"', 'severity=~"crit|page"']}]}
    )
    assert root.key == "{}"
    assert root.routes[0].key == '{}/{severity=~"crit|page",team="audio"}'


def test_group_labels_keep_only_present_group_by_labels():
    root = route_from_config({"receiver": "r", "group_by": ["alertname", "service"]})
    assert root.group_labels({"alertname": "X", "instance": "h1"}) == {"alertname": "X"}


def test_group_by_dots_groups_by_every_label():
    root = route_from_config({"receiver": "r", "routes": [{"matchers": ["a=1"], "group_by": ["..."]}]})
    child = root.routes[0]
    assert child.group_by_all
    assert child.group_labels({"a": "1", "b": "2"}) == {"a": "1", "b": "2"}


def test_empty_group_by_on_a_child_inherits_like_alertmanager():
    root = route_from_config({"receiver": "r", "group_by": ["alertname"], "routes": [{"group_by": []}]})
    assert root.routes[0].group_by == ("alertname",)


def test_routes_built_in_python_inherit_when_attached():
    leaf = Route(matchers=(parse_matcher('severity="critical"'),))
    child = Route(receiver="team", matchers=(parse_matcher("team=a"),), group_wait_ns=0, routes=[leaf])
    root = Route(receiver="default", group_by=("alertname",), routes=[child])
    assert leaf.receiver == "team"
    assert leaf.group_wait_ns == 0
    assert leaf.group_by == ("alertname",)
    assert leaf.repeat_interval_ns == 4 * 3600 * S
    assert root.match({"team": "a", "severity": "critical"}) == [leaf]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"routes": []}, "route.receiver: the root route needs a receiver"),
        ({"receiver": "r", "matchers": ["a=1"]}, "route.matchers: the root route must not have matchers"),
        ({"receiver": "r", "continue": True}, "route.continue"),
        (
            {"receiver": "r", "routes": [{"matchers": ["a=1"]}, {"matchers": ["ok=1", "nope"]}]},
            "route.routes[1].matchers[1]: matcher 'nope'",
        ),
        (
            {"receiver": "r", "routes": [{"routes": [{"matchers": ['a=~"("']}]}]},
            "route.routes[0].routes[0].matchers[0]:",
        ),
        ({"receiver": "r", "group_wait": "soon"}, "route.group_wait: expected a duration"),
        (
            {"receiver": "r", "routes": [{"group_interval": "0s"}]},
            "routes[0].group_interval: cannot be zero",
        ),
        ({"receiver": "r", "repeat_interval": 0}, "route.repeat_interval: cannot be zero"),
        ({"receiver": "r", "group_by": ["...", "alertname"]}, "route.group_by: '...'"),
        ({"receiver": "r", "group_by": ["a", "a"]}, "route.group_by[1]: 'a' is listed twice"),
        ({"receiver": "r", "group_by": ["bad-name"]}, "route.group_by[0]: 'bad-name' is not a label name"),
        (
            {"receiver": "r", "routes": [{"match": {"a": "1"}}]},
            "routes[0].match: not supported; use matchers",
        ),
        ({"receiver": "r", "routes": [{"recevier": "x"}]}, "route.routes[0].recevier: unknown field"),
        (
            {"receiver": "r", "routes": [{"continue": "yes"}]},
            "routes[0].continue: expected true or",
        ),
        ({"receiver": "r", "routes": {"receiver": "x"}}, "route.routes: expected a list"),
    ],
)
def test_config_errors_name_the_path(config, message):
    with pytest.raises(ValueError) as err:
        route_from_config(config)
    assert message in str(err.value)


def test_unknown_receiver_is_rejected_when_receivers_are_given():
    config = {"receiver": "default", "routes": [{"matchers": ["a=1"], "receiver": "pagr"}]}
    with pytest.raises(ValueError, match=r"route.routes\[0\].receiver: 'pagr' is not a configured receiver"):
        route_from_config(config, receivers=["default", "pager"])
    assert route_from_config(config).routes[0].receiver == "pagr"
