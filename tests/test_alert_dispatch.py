"""The dispatcher groups, times, mutes and deduplicates notifications as Alertmanager 0.25 does.

Scenarios are scripts of (second, event) run against an explicit clock; the notifications they
produce are compared field by field with the expected ones.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from otel_audio.processors.alerting.dispatch import Dispatcher
from otel_audio.processors.alerting.inhibit import Inhibitor, InhibitRule, inhibit_rules_from_config
from otel_audio.processors.alerting.model import Alert, AlertState, Notification, parse_matcher
from otel_audio.processors.alerting.routing import route_from_config
from otel_audio.processors.alerting.silences import Silences

S = 10**9
TICK = "tick"


def fire(instance: str, at: int = 0, alertname: str = "SlowStage", **labels: str) -> Alert:
    """A firing alert that started at second ``at``."""
    return Alert(
        labels={"alertname": alertname, "instance": instance, **labels},
        annotations={"summary": f"{alertname} on {instance}"},
        state=AlertState.FIRING,
        starts_at=at * S,
    )


def resolve(alert: Alert, at: int) -> Alert:
    return replace(alert, state=AlertState.RESOLVED, ends_at=at * S)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def __call__(self, notification: Notification) -> None:
        self.sent.append(notification)

    def summary(self) -> list[tuple]:
        """(second, receiver, group key, status, ((instance, state), ...)) per notification."""
        return [
            (
                n.created_at // S,
                n.receiver,
                n.group_key,
                n.status,
                tuple((a.labels["instance"], a.state.value) for a in n.alerts),
            )
            for n in self.sent
        ]


def dispatcher(route: dict, inhibit_rules=None, silences=None) -> tuple[Dispatcher, Recorder]:
    recorder = Recorder()
    inhibitor = Inhibitor(inhibit_rules_from_config(inhibit_rules)) if inhibit_rules else None
    return Dispatcher(route_from_config(route), inhibitor, silences, recorder), recorder


def run(d: Dispatcher, script: list[tuple[int, object]]) -> None:
    for second, event in script:
        if event == TICK:
            d.tick(second * S)
        else:
            d.receive(event, second * S)


def ticks(start: int, stop: int, step: int = 1) -> list[tuple[int, str]]:
    return [(t, TICK) for t in range(start, stop, step)]


BY_NAME = {"receiver": "ops", "group_by": ["alertname"], "group_interval": "5m", "repeat_interval": "4h"}
KEY = '{}:{alertname="SlowStage"}'

# ---------------------------------------------------------------------------------------------
# grouping and timers


def test_first_notification_waits_group_wait_and_batches_the_alerts_that_arrived_meanwhile():
    d, rec = dispatcher(BY_NAME)
    a, b = fire("a", 0), fire("b", 10)
    run(d, [(0, a), (10, b), *ticks(11, 31)])
    assert rec.summary() == [(30, "ops", KEY, "firing", (("a", "firing"), ("b", "firing")))]


def test_notification_fields_mirror_the_group():
    d, rec = dispatcher({**BY_NAME, "group_by": ["alertname", "service"]})
    a = fire("a", 0, service="enhancer", severity="warning")
    b = fire("b", 0, service="enhancer", severity="warning")
    run(d, [(0, a), (0, b), (30, TICK)])
    [n] = rec.sent
    assert n.receiver == "ops"
    assert n.group_key == '{}:{alertname="SlowStage", service="enhancer"}'
    assert n.group_labels == {"alertname": "SlowStage", "service": "enhancer"}
    assert n.status == "firing"
    assert n.created_at == 30 * S
    assert n.alerts == (a, b)
    assert n.common_labels == {"alertname": "SlowStage", "service": "enhancer", "severity": "warning"}


def test_alerts_join_a_flushed_group_at_its_next_group_interval():
    d, rec = dispatcher(BY_NAME)
    a, b, c = fire("a", 0), fire("b", 100), fire("c", 400)
    run(d, [(0, a), (30, TICK), (100, b), *ticks(101, 400), (400, c), *ticks(401, 1000)])
    assert rec.summary() == [
        (30, "ops", KEY, "firing", (("a", "firing"),)),
        (330, "ops", KEY, "firing", (("a", "firing"), ("b", "firing"))),
        (630, "ops", KEY, "firing", (("a", "firing"), ("b", "firing"), ("c", "firing"))),
    ]


def test_unchanged_group_is_resent_on_the_first_flush_after_repeat_interval():
    d, rec = dispatcher({**BY_NAME, "repeat_interval": "1h"})
    # flushes every 300 s from 30 s; 30 + 3600 is a flush, but not *after* the repeat interval
    run(d, [(0, fire("a", 0)), *ticks(30, 8000, 300)])
    assert [n.created_at // S for n in rec.sent] == [30, 3930, 7830]
    assert all(n.alerts[0].labels["instance"] == "a" for n in rec.sent)


def test_repeat_interval_not_a_multiple_of_group_interval_rounds_up_to_the_next_flush():
    d, rec = dispatcher({**BY_NAME, "repeat_interval": "50m"})
    run(d, [(0, fire("a", 0)), *ticks(30, 7000, 300)])
    assert [n.created_at // S for n in rec.sent] == [30, 3330, 6630]


def test_group_interval_is_counted_from_each_flush():
    d, _ = dispatcher(BY_NAME)
    run(d, [(0, fire("a", 0))])
    assert d.next_flush_ns() == 30 * S
    run(d, [(45, TICK)])  # a late tick flushes, and the next flush counts from it
    [group] = d.groups()
    assert group.has_flushed
    assert group.next_flush_ns == 345 * S


def test_distinct_group_labels_make_distinct_groups_and_notifications():
    d, rec = dispatcher({**BY_NAME, "group_by": ["service"]})
    run(d, [(0, fire("a", 0, service="enhancer")), (0, fire("b", 0, service="denoiser")), (0, fire("c", 0))])
    run(d, [(30, TICK)])
    assert sorted(rec.summary()) == [
        (30, "ops", '{}:{service="denoiser"}', "firing", (("b", "firing"),)),
        (30, "ops", '{}:{service="enhancer"}', "firing", (("a", "firing"),)),
        (30, "ops", "{}:{}", "firing", (("c", "firing"),)),  # group_by label missing: left out
    ]


def test_each_matching_route_gets_its_own_group_key_and_timers():
    route = {
        **BY_NAME,
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "pager", "group_wait": "0s", "continue": True},
            {"matchers": ['service="enhancer"'], "receiver": "enhancer-team", "group_wait": "10s"},
        ],
    }
    d, rec = dispatcher(route)
    run(d, [(0, fire("a", 0, severity="critical", service="enhancer")), *ticks(1, 31)])
    assert rec.summary() == [
        (0, "pager", '{}/{severity="critical"}:{alertname="SlowStage"}', "firing", (("a", "firing"),)),
        (
            10,
            "enhancer-team",
            '{}/{service="enhancer"}:{alertname="SlowStage"}',
            "firing",
            (("a", "firing"),),
        ),
    ]


def test_alerts_are_ordered_by_job_then_instance_then_labels():
    d, rec = dispatcher({**BY_NAME, "group_wait": "0s"})
    alerts = [fire("b", 0, job="x"), fire("a", 0, job="y"), fire("a", 0, job="x"), fire("z", 0)]
    for alert in alerts:
        d.receive(alert, 0)
    d.tick(300 * S)
    assert [(a.labels.get("job"), a.labels["instance"]) for a in rec.sent[-1].alerts] == [
        ("x", "a"),
        ("x", "b"),
        ("y", "a"),
        (None, "z"),
    ]


def test_pending_and_inactive_alerts_are_not_dispatched():
    d, rec = dispatcher({**BY_NAME, "group_wait": "0s"})
    pending = replace(fire("a", 0), state=AlertState.PENDING)
    d.receive(pending, 0)
    d.receive(replace(pending, state=AlertState.INACTIVE), 0)
    d.tick(3600 * S)
    assert rec.sent == []
    assert d.groups() == []


# ---------------------------------------------------------------------------------------------
# the latency path


def test_group_wait_zero_sends_inside_receive():
    d, rec = dispatcher({**BY_NAME, "group_wait": "0s"})
    d.receive(fire("a", 5), 5 * S)
    assert rec.summary() == [(5, "ops", KEY, "firing", (("a", "firing"),))]


def test_group_wait_zero_still_holds_later_alerts_of_a_flushed_group_for_group_interval():
    d, rec = dispatcher({**BY_NAME, "group_wait": "0s"})
    run(d, [(0, fire("a", 0)), (10, fire("b", 10)), *ticks(11, 301)])
    assert rec.summary() == [
        (0, "ops", KEY, "firing", (("a", "firing"),)),
        (300, "ops", KEY, "firing", (("a", "firing"), ("b", "firing"))),
    ]


def test_alert_older_than_group_wait_is_sent_at_once_by_a_new_group():
    d, rec = dispatcher(BY_NAME)
    d.receive(fire("a", 0), 31 * S)  # started 31 s ago, group_wait 30 s
    assert rec.summary() == [(31, "ops", KEY, "firing", (("a", "firing"),))]


# ---------------------------------------------------------------------------------------------
# resolution


def test_resolved_alert_is_sent_once_and_the_emptied_group_is_removed():
    d, rec = dispatcher(BY_NAME)
    a, b = fire("a", 0), fire("b", 10)  # the timeline in docs/alerting-routing.md
    run(d, [(0, a), (10, b), (30, TICK), (100, resolve(a, 100)), *ticks(101, 700)])
    assert rec.summary() == [
        (30, "ops", KEY, "firing", (("a", "firing"), ("b", "firing"))),
        (330, "ops", KEY, "firing", (("a", "resolved"), ("b", "firing"))),
    ]
    assert [a.labels["instance"] for a in d.groups()[0].alerts] == ["b"]

    run(d, [(700, resolve(b, 700)), *ticks(701, 1000)])
    assert rec.summary()[2:] == [(930, "ops", KEY, "resolved", (("b", "resolved"),))]
    assert rec.sent[2].alerts[0].ends_at == 700 * S
    assert d.groups() == []


def test_alert_firing_again_after_its_group_resolved_starts_a_new_group():
    d, rec = dispatcher(BY_NAME)
    a = fire("a", 0)
    run(
        d,
        [
            (0, a),
            (30, TICK),
            (100, resolve(a, 100)),
            (330, TICK),
            (1000, fire("a", 1000)),
            *ticks(1001, 1031),
        ],
    )
    assert [(t, status) for t, _, _, status, _ in rec.summary()] == [
        (30, "firing"),
        (330, "resolved"),
        (1030, "firing"),
    ]


def test_alert_that_fires_and_resolves_before_the_first_flush_is_never_sent():
    d, rec = dispatcher(BY_NAME)
    a = fire("a", 0)
    run(d, [(0, a), (10, resolve(a, 10)), *ticks(11, 400)])
    assert rec.sent == []
    assert d.groups() == []


def test_resolved_alert_with_no_group_is_not_sent():
    d, rec = dispatcher(BY_NAME)
    d.receive(resolve(fire("a", 0), 50), 60 * S)
    d.tick(400 * S)
    assert rec.sent == []
    assert d.groups() == []


# ---------------------------------------------------------------------------------------------
# dedup


def test_resending_the_same_firing_alert_does_not_resend_the_notification():
    d, rec = dispatcher(BY_NAME)
    a = fire("a", 0)
    run(d, [(0, a), (30, TICK), (60, a), (330, TICK), (400, a), (630, TICK)])
    assert [n.created_at // S for n in rec.sent] == [30]


def test_alert_that_flaps_between_flushes_does_not_trigger_a_notification():
    d, rec = dispatcher(BY_NAME)
    a = fire("a", 0)
    run(d, [(0, a), (30, TICK), (100, resolve(a, 100)), (200, fire("a", 200)), (330, TICK)])
    assert [n.created_at // S for n in rec.sent] == [30]


def test_dedup_is_kept_per_receiver():
    route = {
        **BY_NAME,
        "routes": [
            {"matchers": ["team=a"], "receiver": "slack", "continue": True},
            {"matchers": ["team=a"], "receiver": "pager", "repeat_interval": "10m"},
        ],
    }
    d, rec = dispatcher(route)
    run(d, [(0, fire("a", 0, team="a")), *ticks(30, 1000, 300)])
    assert [(n.created_at // S, n.receiver) for n in rec.sent] == [
        (30, "slack"),  # groups due at the same time flush in routing-tree order
        (30, "pager"),
        (930, "pager"),  # pager's repeat interval passed; slack's 4 h has not
    ]


def test_notification_log_file_keeps_dedup_across_a_restart(tmp_path):
    path = tmp_path / "nflog.sqlite"
    a = fire("a", 0)
    before, after, forgetful = Recorder(), Recorder(), Recorder()
    d = Dispatcher(route_from_config(BY_NAME), None, None, before, log_path=path)
    run(d, [(0, a), (30, TICK)])
    assert len(before.sent) == 1

    restarted = Dispatcher(route_from_config(BY_NAME), None, None, after, log_path=path)
    run(restarted, [(100, a), *ticks(400, 14800, 300)])  # the rule engine re-sends its firing alert
    # only the 4 h repeat: the first flush (100 s + k * 300 s) after 30 s + 4 h
    assert [n.created_at // S for n in after.sent] == [14500]

    in_memory = Dispatcher(route_from_config(BY_NAME), None, None, forgetful)
    in_memory.receive(a, 100 * S)
    assert [n.created_at // S for n in forgetful.sent] == [100]


def test_notification_log_forgets_entries_after_the_retention(tmp_path):
    path = tmp_path / "nflog.sqlite"
    a = fire("a", 0)
    rec = Recorder()
    d = Dispatcher(route_from_config(BY_NAME), None, None, rec, log_retention_ns=3600 * S, log_path=path)
    run(d, [(0, a), (30, TICK), (3630, TICK)])
    again = Recorder()
    Dispatcher(route_from_config(BY_NAME), None, None, again, log_path=path).receive(a, 3700 * S)
    assert [n.created_at // S for n in again.sent] == [3700]


def test_failed_send_is_retried_at_the_next_flush():
    d, rec = dispatcher(BY_NAME)
    failures = [RuntimeError("outbox full")]

    def flaky(notification: Notification) -> None:
        if failures:
            raise failures.pop()
        rec(notification)

    d.send = flaky
    a = fire("a", 0)
    d.receive(a, 0)
    with pytest.raises(RuntimeError):
        d.tick(30 * S)
    d.tick(330 * S)
    assert [n.created_at // S for n in rec.sent] == [330]


# ---------------------------------------------------------------------------------------------
# a new routing tree


def test_reloading_the_same_tree_does_not_renotify_and_keeps_following_the_alerts():
    d, rec = dispatcher(BY_NAME)
    a = fire("a", 0)
    run(d, [(0, a), (30, TICK)])
    d.set_route(route_from_config(BY_NAME), 100 * S)
    assert len(rec.sent) == 1  # the regrouped alert is flushed at once, and deduplicated
    [group] = d.groups()
    assert group.next_flush_ns == 400 * S
    run(d, [(200, resolve(a, 200)), *ticks(201, 401)])
    assert rec.summary()[1:] == [(400, "ops", KEY, "resolved", (("a", "resolved"),))]
    assert d.groups() == []


def test_reloading_a_tree_that_routes_elsewhere_notifies_the_new_receiver():
    d, rec = dispatcher(BY_NAME)
    run(d, [(0, fire("a", 0, team="audio")), (30, TICK)])
    moved = {**BY_NAME, "routes": [{"matchers": ['team="audio"'], "receiver": "audio-pager"}]}
    d.set_route(route_from_config(moved), 100 * S)
    assert rec.summary() == [
        (30, "ops", KEY, "firing", (("a", "firing"),)),
        (100, "audio-pager", '{}/{team="audio"}:{alertname="SlowStage"}', "firing", (("a", "firing"),)),
    ]
    assert [g.receiver for g in d.groups()] == ["audio-pager"]


def test_reloading_keeps_alerts_still_waiting_for_their_first_flush():
    d, rec = dispatcher(BY_NAME)
    run(d, [(0, fire("a", 0)), (10, fire("b", 10))])
    d.set_route(route_from_config({**BY_NAME, "group_wait": "1m"}), 20 * S)
    run(d, ticks(21, 81))
    assert rec.summary() == [(80, "ops", KEY, "firing", (("a", "firing"), ("b", "firing")))]


# ---------------------------------------------------------------------------------------------
# silences


@pytest.fixture
def silences():
    store = Silences(":memory:")
    yield store
    store.close()


def test_silenced_alerts_are_left_out_and_sent_once_the_silence_ends(silences):
    d, rec = dispatcher(BY_NAME, silences=silences)
    silences.add(['instance="b"'], 0, 400 * S, created_by="ana", comment="maintenance", now_ns=0)
    run(d, [(0, fire("a", 0)), (0, fire("b", 0)), *ticks(30, 700, 300)])
    assert rec.summary() == [
        (30, "ops", KEY, "firing", (("a", "firing"),)),
        (630, "ops", KEY, "firing", (("a", "firing"), ("b", "firing"))),
    ]


def test_group_whose_alerts_are_all_silenced_sends_nothing(silences):
    d, rec = dispatcher(BY_NAME, silences=silences)
    silences.add(['alertname="SlowStage"'], 0, 3600 * S, created_by="ana", comment="known", now_ns=0)
    run(d, [(0, fire("a", 0)), (0, fire("b", 0)), *ticks(30, 3000, 300)])
    assert rec.sent == []
    assert len(d.groups()) == 1  # still grouped, only not notified


def test_alert_resolving_under_a_silence_is_not_sent_resolved(silences):
    d, rec = dispatcher(BY_NAME, silences=silences)
    a = fire("a", 0)
    run(d, [(0, a), (30, TICK)])
    silences.add(['instance="a"'], 40 * S, 3600 * S, created_by="ana", comment="known", now_ns=40 * S)
    run(d, [(100, resolve(a, 100)), (330, TICK)])
    assert [n.status for n in rec.sent] == ["firing"]
    assert d.groups() == []


# ---------------------------------------------------------------------------------------------
# inhibition

CRITICAL_MUTES_WARNING = [
    {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["service"],
    }
]


def test_critical_alert_inhibits_warnings_of_the_same_service_only():
    d, rec = dispatcher(BY_NAME, inhibit_rules=CRITICAL_MUTES_WARNING)
    run(
        d,
        [
            (0, fire("crit", 0, severity="critical", service="enhancer")),
            (0, fire("warn-same", 0, severity="warning", service="enhancer")),
            (0, fire("warn-other", 0, severity="warning", service="denoiser")),
            (30, TICK),
        ],
    )
    assert rec.summary() == [(30, "ops", KEY, "firing", (("crit", "firing"), ("warn-other", "firing")))]


def test_inhibited_alert_is_sent_once_its_source_resolves():
    d, rec = dispatcher(BY_NAME, inhibit_rules=CRITICAL_MUTES_WARNING)
    crit = fire("crit", 0, severity="critical", service="enhancer")
    warn = fire("warn", 0, severity="warning", service="enhancer")
    run(d, [(0, crit), (0, warn), (30, TICK), (100, resolve(crit, 100)), (330, TICK)])
    assert rec.summary() == [
        (30, "ops", KEY, "firing", (("crit", "firing"),)),
        (330, "ops", KEY, "firing", (("crit", "resolved"), ("warn", "firing"))),
    ]


def test_alerts_view_reports_what_mutes_each_alert(silences):
    d, _ = dispatcher(BY_NAME, inhibit_rules=CRITICAL_MUTES_WARNING, silences=silences)
    crit = fire("crit", 0, severity="critical", service="enhancer")
    warn = fire("warn", 0, severity="warning", service="enhancer")
    other = fire("other", 0, severity="warning", service="denoiser")
    s = silences.add(['service="denoiser"'], 0, 3600 * S, created_by="ana", comment="deploy", now_ns=0)
    for alert in (crit, warn, other):
        d.receive(alert, 0)
    views = {v.alert.labels["instance"]: v for v in d.alerts(10 * S)}
    assert (views["crit"].state, views["crit"].silenced_by, views["crit"].inhibited_by) == ("active", (), ())
    assert (views["warn"].state, views["warn"].inhibited_by) == ("suppressed", (crit.fingerprint,))
    assert (views["other"].state, views["other"].silenced_by) == ("suppressed", (s.id,))
    assert views["crit"].receivers == ("ops",)
    assert d.alerts(3600 * S)[-1].silenced_by == ()  # the silence has ended


def test_groups_view_lists_alerts_and_next_flush():
    d, _ = dispatcher(BY_NAME)
    d.receive(fire("a", 0), 0)
    d.receive(fire("b", 5), 5 * S)
    [group] = d.groups()
    assert (group.group_key, group.receiver, group.group_labels) == (KEY, "ops", {"alertname": "SlowStage"})
    assert [a.labels["instance"] for a in group.alerts] == ["a", "b"]
    assert (group.next_flush_ns, group.has_flushed) == (30 * S, False)


WARN = {"severity": "warning", "service": "enhancer"}


def crit(service: str | None = "enhancer", state: AlertState = AlertState.FIRING, **labels: str) -> Alert:
    base = {"alertname": "Down", "severity": "critical", **labels}
    if service is not None:
        base["service"] = service
    return Alert(labels=base, annotations={}, state=state, starts_at=0)


def rule(equal=("service",)) -> Inhibitor:
    return Inhibitor(
        [InhibitRule((parse_matcher('severity="critical"'),), (parse_matcher('severity="warning"'),), equal)]
    )


def test_inhibitor_needs_a_firing_source_with_equal_labels():
    inhibitor = rule()
    assert inhibitor.is_inhibited(WARN, [crit()])
    assert not inhibitor.is_inhibited({**WARN, "service": "denoiser"}, [crit()])
    assert not inhibitor.is_inhibited(WARN, [crit(state=AlertState.RESOLVED)])
    assert not inhibitor.is_inhibited(WARN, [crit(state=AlertState.PENDING)])
    assert not inhibitor.is_inhibited({**WARN, "severity": "info"}, [crit()])
    assert not inhibitor.is_inhibited(WARN, [])


def test_missing_equal_label_on_both_sides_counts_as_equal():
    inhibitor = rule()
    assert inhibitor.is_inhibited({"severity": "warning"}, [crit(service=None)])
    assert not inhibitor.is_inhibited({"severity": "warning"}, [crit()])
    assert inhibitor.is_inhibited({"severity": "warning", "service": ""}, [crit(service=None)])


def test_alert_matching_both_sides_does_not_inhibit_itself_or_its_likes():
    both = Inhibitor([InhibitRule((parse_matcher("a=1"),), (parse_matcher("b=1"),), ("service",))])
    me = Alert({"a": "1", "b": "1", "service": "x"}, {}, AlertState.FIRING, 0)
    twin = Alert({"a": "1", "b": "1", "service": "x", "i": "2"}, {}, AlertState.FIRING, 0)
    source_only = Alert({"a": "1", "service": "x"}, {}, AlertState.FIRING, 0)
    assert not both.is_inhibited(me.labels, [me])
    assert not both.is_inhibited(me.labels, [me, twin])
    assert both.inhibited_by(me.labels, [me, twin, source_only]) == [source_only.fingerprint]
    assert both.is_inhibited({"b": "1", "service": "x"}, [me])  # a pure target is inhibited by it


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([{"target_matchers": ["a=1"]}], "inhibit_rules[0].source_matchers: at least one matcher"),
        ([{"source_matchers": ["a=1"], "target_matchers": ["b"]}], "inhibit_rules[0].target_matchers[0]:"),
        ([{"source_match": {"a": "1"}}], "inhibit_rules[0].source_match: unknown field"),
        (
            [{"source_matchers": ["a=1"], "target_matchers": ["b=1"], "equal": "service"}],
            "equal: expected a list",
        ),
        ({"source_matchers": []}, "inhibit_rules: expected a list"),
    ],
)
def test_inhibit_rule_config_errors_name_the_path(config, message):
    with pytest.raises(ValueError) as err:
        inhibit_rules_from_config(config)
    assert message in str(err.value)


def test_inhibit_rules_from_config_reads_matchers_and_equal():
    [parsed] = inhibit_rules_from_config(CRITICAL_MUTES_WARNING)
    assert parsed.source_matchers == (parse_matcher('severity="critical"'),)
    assert parsed.target_matchers == (parse_matcher('severity="warning"'),)
    assert parsed.equal == ("service",)
