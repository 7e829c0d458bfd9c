"""Escalation: levels paged in order on an explicit clock, ack stops it, repeat, resolution, restart."""

from __future__ import annotations

import pytest
import yaml

from otel_audio.notify.outbox import Outbox
from otel_audio.processors.alerting.escalation import (
    EscalationPolicy,
    Escalator,
    Level,
    policies_from_config,
)
from otel_audio.processors.alerting.incidents import Incidents
from otel_audio.processors.alerting.model import Alert, AlertState, Notification, parse_matcher

S = 10**9
M = 60 * S
T0 = 1_800_000_000 * S
GROUP = '{}:{service="enh"}'

ONCALL = EscalationPolicy(
    "oncall",
    (Level(("slack",), 5 * M), Level(("pagerduty",), 15 * M)),
    matchers=(parse_matcher('severity="critical"'),),
)


def _note(
    severity: str = "critical", state: AlertState = AlertState.FIRING, group: str = GROUP
) -> Notification:
    labels = {"alertname": "Slow", "severity": severity, "service": "enh"}
    alert = Alert(labels, {}, state, T0, T0 + 30 * M if state is AlertState.RESOLVED else 0)
    status = "firing" if state is AlertState.FIRING else "resolved"
    return Notification("team", group, {"service": "enh"}, (alert,), status, T0)


def _resolved(group: str = GROUP) -> Notification:
    return _note(state=AlertState.RESOLVED, group=group)


class Pager:
    """Records what the escalator sends, as (receiver, level, status)."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def __call__(self, notification: Notification) -> None:
        self.sent.append(notification)

    @property
    def pages(self) -> list[tuple[str, int, str]]:
        return [(n.receiver, n.extra["escalation_level"], n.status) for n in self.sent]


@pytest.fixture
def incidents():
    store = Incidents(":memory:")
    yield store
    store.close()


@pytest.fixture
def pager():
    return Pager()


def _escalator(incidents, pager, *policies: EscalationPolicy) -> Escalator:
    return Escalator(policies or (ONCALL,), incidents, pager)


def test_opening_an_incident_pages_level_one(incidents, pager):
    incident = _escalator(incidents, pager).observe(_note(), T0)
    assert pager.pages == [("slack", 1, "firing")]
    extra = pager.sent[0].extra
    assert (extra["incident_id"], extra["escalation_policy"], extra["escalation_cycle"]) == (
        incident.id,
        "oncall",
        1,
    )
    assert pager.sent[0].group_key == GROUP


def test_levels_fire_in_order_each_after_the_previous_timeout(incidents, pager):
    escalator = _escalator(incidents, pager)
    escalator.observe(_note(), T0)
    assert escalator.tick(T0 + 5 * M - 1) == []
    assert [n.receiver for n in escalator.tick(T0 + 5 * M)] == ["pagerduty"]
    assert escalator.tick(T0 + 60 * M) == []
    assert pager.pages == [("slack", 1, "firing"), ("pagerduty", 2, "firing")]


def test_acknowledging_stops_escalation(incidents, pager):
    escalator = _escalator(incidents, pager)
    incident = escalator.observe(_note(), T0)
    incidents.acknowledge(incident.id, "ana", T0 + 4 * M)
    assert escalator.tick(T0 + 5 * M) == []
    assert pager.pages == [("slack", 1, "firing")]
    assert escalator.status(incident.id).state == "acknowledged"


def test_acknowledging_after_level_two_stops_before_the_repeat(incidents, pager):
    policy = EscalationPolicy("p", ONCALL.levels, repeat=1)
    escalator = _escalator(incidents, pager, policy)
    incident = escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    incidents.acknowledge(incident.id, "ana", T0 + 6 * M)
    assert escalator.tick(T0 + 20 * M) == []
    assert [p[0] for p in pager.pages] == ["slack", "pagerduty"]


def test_repeat_runs_the_policy_again_after_the_last_level_timeout(incidents, pager):
    policy = EscalationPolicy("p", ONCALL.levels, repeat=1)
    escalator = _escalator(incidents, pager, policy)
    escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    assert escalator.tick(T0 + 20 * M - 1) == []
    again = escalator.tick(T0 + 20 * M)
    assert [(n.receiver, n.extra["escalation_cycle"]) for n in again] == [("slack", 2)]
    assert [n.receiver for n in escalator.tick(T0 + 25 * M)] == ["pagerduty"]
    assert escalator.tick(T0 + 10 * 60 * M) == []
    assert len(pager.sent) == 4


def test_each_page_has_its_own_idempotency_key(incidents, pager):
    policy = EscalationPolicy("p", (Level(("slack",), 5 * M),), repeat=2)
    escalator = _escalator(incidents, pager, policy)
    escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    escalator.tick(T0 + 10 * M)
    keys = [n.extra["idempotency_key"] for n in pager.sent]
    assert len(keys) == 3 and len(set(keys)) == 3


def test_resolution_notifies_every_paged_target_once(incidents, pager):
    policy = EscalationPolicy("p", (*ONCALL.levels, Level(("email",), 5 * M)), repeat=1)
    escalator = _escalator(incidents, pager, policy)
    escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)  # pagerduty
    escalator.tick(T0 + 20 * M)  # email
    escalator.tick(T0 + 25 * M)  # slack again, second pass
    pager.sent.clear()
    escalator.observe(_resolved(), T0 + 26 * M)
    assert pager.pages == [("slack", 1, "resolved"), ("pagerduty", 2, "resolved"), ("email", 3, "resolved")]
    assert all(n.alerts[0].state is AlertState.RESOLVED for n in pager.sent)
    escalator.tick(T0 + 60 * M)
    escalator.observe(_resolved(), T0 + 61 * M)
    assert len(pager.sent) == 3


def test_resolution_does_not_notify_levels_never_paged(incidents, pager):
    escalator = _escalator(incidents, pager)
    escalator.observe(_note(), T0)
    pager.sent.clear()
    escalator.observe(_resolved(), T0 + M)
    assert pager.pages == [("slack", 1, "resolved")]
    assert escalator.tick(T0 + 60 * M) == []


def test_resolution_after_an_ack_still_notifies_the_paged_levels(incidents, pager):
    escalator = _escalator(incidents, pager)
    incident = escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    incidents.acknowledge(incident.id, "ana", T0 + 6 * M)
    pager.sent.clear()
    escalator.observe(_resolved(), T0 + 7 * M)
    assert [p[0] for p in pager.pages] == ["slack", "pagerduty"]


def test_incidents_no_policy_matches_are_not_escalated(incidents, pager):
    escalator = _escalator(incidents, pager)
    escalator.observe(_note(severity="warning"), T0)
    assert escalator.tick(T0 + 60 * M) == []
    assert pager.sent == []


def test_first_matching_policy_applies(incidents, pager):
    catch_all = EscalationPolicy("everyone", (Level(("email",), M),))
    escalator = _escalator(incidents, pager, ONCALL, catch_all)
    critical = escalator.observe(_note(), T0)
    warning = escalator.observe(_note(severity="warning", group="other"), T0)
    assert escalator.status(critical.id).policy == "oncall"
    assert escalator.status(warning.id).policy == "everyone"


def test_a_group_matches_by_its_highest_severity(incidents, pager):
    escalator = _escalator(incidents, pager)
    mixed = _note()
    warning = Alert(
        {"alertname": "Other", "severity": "warning", "service": "enh"}, {}, AlertState.FIRING, T0
    )
    escalator.observe(
        Notification("team", GROUP, {"service": "enh"}, (*mixed.alerts, warning), "firing", T0), T0
    )
    assert pager.pages == [("slack", 1, "firing")]


def test_timeline_records_every_escalation_step_in_order(incidents, pager):
    escalator = _escalator(incidents, pager)
    incident = escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    incidents.acknowledge(incident.id, "ana", T0 + 6 * M)
    escalator.observe(_resolved(), T0 + 7 * M)
    steps = [
        (e.kind, e.at, e.details.get("level"), e.details.get("channel"))
        for e in incidents.timeline(incident.id)
    ]
    assert steps == [
        ("opened", T0, None, None),
        ("notified", T0, None, "team"),
        ("escalated", T0, 1, None),
        ("notified", T0, 1, "slack"),
        ("escalated", T0 + 5 * M, 2, None),
        ("notified", T0 + 5 * M, 2, "pagerduty"),
        ("acknowledged", T0 + 6 * M, None, None),
        ("notified", T0 + 7 * M, None, "team"),
        ("resolved", T0 + 7 * M, None, None),
        ("notified", T0 + 7 * M, 1, "slack"),
        ("notified", T0 + 7 * M, 2, "pagerduty"),
    ]
    escalated = incidents.timeline(incident.id)[2].details
    assert escalated == {"policy": "oncall", "level": 1, "cycle": 1, "targets": ["slack"]}


def test_a_late_tick_pages_every_level_that_came_due_in_order_each_target_once(incidents, pager):
    policy = EscalationPolicy("p", (*ONCALL.levels, Level(("slack", "email"), 5 * M)))
    escalator = _escalator(incidents, pager, policy)
    escalator.observe(_note(), T0)
    pager.sent.clear()
    escalator.tick(T0 + 60 * M)
    assert [p[:2] for p in pager.pages] == [("pagerduty", 2), ("slack", 3), ("email", 3)]


def test_restart_mid_escalation_continues_at_the_right_level_without_duplicates(tmp_path, pager):
    path = tmp_path / "incidents.sqlite"
    policy = EscalationPolicy("p", (*ONCALL.levels, Level(("email",), 5 * M)))
    first = Incidents(path)
    escalator = Escalator([policy], first, pager)
    incident = escalator.observe(_note(), T0)
    escalator.tick(T0 + 5 * M)
    first.close()

    second = Incidents(path)
    restarted = Escalator([policy], second, pager)
    assert restarted.tick(T0 + 19 * M) == []
    assert restarted.status(incident.id).level == 2
    restarted.tick(T0 + 20 * M)
    restarted.tick(T0 + 21 * M)
    restarted.observe(_resolved(), T0 + 22 * M)
    restarted.tick(T0 + 23 * M)
    assert pager.pages == [
        ("slack", 1, "firing"),
        ("pagerduty", 2, "firing"),
        ("email", 3, "firing"),
        ("slack", 1, "resolved"),
        ("pagerduty", 2, "resolved"),
        ("email", 3, "resolved"),
    ]
    second.close()


def test_an_incident_opened_before_the_escalator_saw_it_is_escalated_on_the_next_tick(incidents, pager):
    escalator = _escalator(incidents, pager)
    incidents.observe(_note(), T0)  # e.g. a crash between opening the incident and paging
    escalator.tick(T0 + S)
    assert pager.pages == [("slack", 1, "firing")]
    assert escalator.status(1).next_at == T0 + S + 5 * M


def test_a_failed_send_commits_nothing_and_the_step_is_retried_with_the_same_keys(incidents, pager):
    keys: list[str] = []

    def flaky(notification: Notification) -> None:
        keys.append(notification.extra["idempotency_key"])
        if notification.receiver == "email" and keys.count(notification.extra["idempotency_key"]) == 1:
            raise OSError("outbox disk full")
        pager(notification)

    policy = EscalationPolicy("p", (ONCALL.levels[0], Level(("pagerduty", "email"), 5 * M)))
    escalator = Escalator([policy], incidents, flaky)
    incident = escalator.observe(_note(), T0)
    with pytest.raises(OSError):
        escalator.tick(T0 + 5 * M)
    assert escalator.status(incident.id).level == 1
    escalator.tick(T0 + 5 * M + S)
    assert keys[1:3] == keys[3:5]  # the retried step reuses its keys, so a keyed outbox drops the repeat
    assert [p[0] for p in pager.pages] == ["slack", "pagerduty", "pagerduty", "email"]
    assert [e.kind for e in incidents.timeline(incident.id)].count("escalated") == 2


def test_next_at_is_when_the_next_level_is_due(incidents, pager):
    escalator = _escalator(incidents, pager)
    assert escalator.next_at() is None
    incident = escalator.observe(_note(), T0)
    assert escalator.next_at() == T0 + 5 * M
    incidents.acknowledge(incident.id, "ana", T0 + M)
    escalator.tick(T0 + 2 * M)
    assert escalator.next_at() is None


def test_status_to_dict(incidents, pager):
    escalator = _escalator(incidents, pager)
    incident = escalator.observe(_note(), T0)
    assert escalator.status(incident.id).to_dict() == {
        "incident_id": incident.id,
        "policy": "oncall",
        "level": 1,
        "cycle": 1,
        "state": "escalating",
        "next_at": "2027-01-15T08:05:00Z",
        "next_at_ns": T0 + 5 * M,
        "paged": ["slack"],
    }
    assert escalator.status(999) is None


CONFIG = """
escalation_policies:
  oncall:
    match: ['severity="critical"']
    levels:
      - {targets: [slack], timeout: 5m}
      - {targets: [pagerduty, email], timeout: 15m}
    repeat: 1
  everyone:
    levels:
      - {targets: [email], timeout: 1h}
"""


def test_policies_from_yaml():
    oncall, everyone = policies_from_config(yaml.safe_load(CONFIG), receivers=["slack", "pagerduty", "email"])
    assert oncall == EscalationPolicy(
        "oncall",
        (Level(("slack",), 5 * M), Level(("pagerduty", "email"), 15 * M)),
        repeat=1,
        matchers=(parse_matcher('severity="critical"'),),
    )
    assert (everyone.levels, everyone.repeat, everyone.matchers) == ((Level(("email",), 3600 * S),), 0, ())


def test_no_escalation_section_means_no_policies():
    assert policies_from_config({}) == []


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], r"^escalation_policies: expected a mapping"),
        ({"p": {"levels": []}}, r"^escalation_policies\.p\.levels: expected a non-empty list"),
        (
            {"p": {"level": []}},
            r"^escalation_policies\.p\.level: unknown key; accepted: levels, match, repeat",
        ),
        (
            {"p": {"levels": [{"targets": ["slack"]}]}},
            r"^escalation_policies\.p\.levels\[0\]\.timeout: expected",
        ),
        (
            {"p": {"levels": [{"targets": ["slack"], "timeout": "5x"}]}},
            r"^escalation_policies\.p\.levels\[0\]\.timeout: expected a duration",
        ),
        (
            {"p": {"levels": [{"targets": ["slack"], "timeout": "0s"}]}},
            r"^escalation_policies\.p\.levels\[0\]\.timeout: expected a positive duration",
        ),
        (
            {"p": {"levels": [{"targets": [], "timeout": "1m"}]}},
            r"\.levels\[0\]\.targets: expected a non-empty",
        ),
        (
            {
                "p": {
                    "levels": [{"targets": ["slack"], "timeout": "1m"}, {"targets": ["sms"], "timeout": "1m"}]
                }
            },
            r"^escalation_policies\.p\.levels\[1\]\.targets\[0\]: "
            "unknown channel 'sms'; configured: email, slack",
        ),
        (
            {"p": {"levels": [{"targets": ["slack"], "timeout": "1m"}], "repeat": -1}},
            r"^escalation_policies\.p\.repeat: expected an integer from 0 to 100",
        ),
        (
            {"p": {"levels": [{"targets": ["slack"], "timeout": "1m"}], "match": ['severity=~"("']}},
            r"^escalation_policies\.p\.match\[0\]: ",
        ),
    ],
)
def test_config_errors_name_the_path(section, message):
    with pytest.raises(ValueError, match=message):
        policies_from_config({"escalation_policies": section}, receivers=["slack", "email"])


def test_policy_names_must_be_unique(incidents, pager):
    with pytest.raises(ValueError, match="names must be unique"):
        Escalator([ONCALL, ONCALL], incidents, pager)


def test_a_keyed_outbox_stores_each_page_once_across_retries_and_keeps_repeat_passes(tmp_path, incidents):
    outbox = Outbox(tmp_path / "outbox.sqlite", dict.fromkeys(("slack", "pagerduty", "email")))
    failures = iter([True])

    def send(notification: Notification) -> None:
        outbox.put(notification)
        if notification.receiver == "email" and next(failures, False):
            raise OSError("crash after the enqueue, before the step was committed")

    policy = EscalationPolicy("p", (Level(("slack",), 5 * M), Level(("pagerduty", "email"), 5 * M)), repeat=1)
    escalator = Escalator([policy], incidents, send)
    escalator.observe(_note(), T0)
    with pytest.raises(OSError):
        escalator.tick(T0 + 5 * M)
    for minute in (6, 10, 15):
        escalator.tick(T0 + minute * M)
    assert [d.channel for d in outbox.pending()] == [
        "slack",
        "pagerduty",
        "email",
        "slack",
        "pagerduty",
        "email",
    ]
    outbox.close()
