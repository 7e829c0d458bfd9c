"""Alert states: pending for `for`, firing, keep_firing_for, resolution, flap damping, restore."""

from __future__ import annotations

import pytest

from otel_audio.processors.alerting.model import AlertState, Sample
from otel_audio.processors.alerting.rules import AlertRule, check_template, humanize, render
from otel_audio.processors.alerting.state import AlertHistory, Damping, RuleAlerts

S = 10**9
M = 60 * S
T0 = 1_800_000_000 * S
ENH = {"service": "enh", "audio.stage": "enhancement"}
DEC = {"service": "enh", "audio.stage": "decode"}


def _rule(**kw) -> AlertRule:
    fields = {"name": "Slow", "condition": "x > 1", "parsed": None, "severity": "critical"}
    fields.update(kw)
    return AlertRule(**fields)


def _states(changes) -> list[tuple[str, str]]:
    return [(a.labels["audio.stage"], a.state.value) for a in changes]


def test_pending_for_the_for_duration_then_firing_then_resolved():
    alerts = RuleAlerts(_rule(for_ns=2 * M), Damping(flap_starts=0))
    assert _states(alerts.update([Sample(ENH, 5.0)], T0)) == [("enhancement", "pending")]
    assert alerts.update([Sample(ENH, 6.0)], T0 + M) == []  # still pending: no change to report
    fired = alerts.update([Sample(ENH, 7.0)], T0 + 2 * M)
    assert _states(fired) == [("enhancement", "firing")]
    assert fired[0].starts_at == T0 + 2 * M and fired[0].value == 7.0
    assert fired[0].labels == {**ENH, "alertname": "Slow", "severity": "critical"}
    assert alerts.update([Sample(ENH, 8.0)], T0 + 3 * M) == []
    resolved = alerts.update([], T0 + 4 * M)
    assert _states(resolved) == [("enhancement", "resolved")]
    assert resolved[0].ends_at == T0 + 4 * M and resolved[0].starts_at == T0 + 2 * M
    assert alerts.active() == []


def test_a_pending_alert_whose_condition_stops_goes_inactive_without_firing():
    alerts = RuleAlerts(_rule(for_ns=5 * M), Damping(flap_starts=0))
    alerts.update([Sample(ENH, 5.0)], T0)
    assert _states(alerts.update([], T0 + M)) == [("enhancement", "inactive")]
    assert _states(alerts.update([Sample(ENH, 5.0)], T0 + 2 * M)) == [
        ("enhancement", "pending")
    ]  # starts over
    assert alerts.update([Sample(ENH, 5.0)], T0 + 6 * M) == []  # only 4 minutes since it became pending


def test_for_zero_fires_at_once_and_each_label_set_is_its_own_alert():
    alerts = RuleAlerts(_rule(), Damping(flap_starts=0))
    changes = alerts.update([Sample(ENH, 5.0), Sample(DEC, 3.0)], T0)
    assert sorted(_states(changes)) == [("decode", "firing"), ("enhancement", "firing")]
    assert _states(alerts.update([Sample(ENH, 5.0)], T0 + S)) == [("decode", "resolved")]
    assert [a.labels["audio.stage"] for a in alerts.active()] == ["enhancement"]


def test_keep_firing_for_holds_a_firing_alert_after_its_condition_clears():
    alerts = RuleAlerts(_rule(keep_firing_for_ns=3 * M), Damping(flap_starts=0))
    alerts.update([Sample(ENH, 5.0)], T0)
    assert alerts.update([], T0 + M) == []
    assert alerts.update([], T0 + 2 * M + 59 * S) == []
    assert alerts.update([Sample(ENH, 5.0)], T0 + 3 * M) == []  # held again: the same alert goes on
    assert alerts.update([], T0 + 5 * M) == []
    assert _states(alerts.update([], T0 + 6 * M)) == [("enhancement", "resolved")]


def test_flapping_is_damped_to_one_long_alert():
    alerts = RuleAlerts(_rule(), Damping(flap_starts=3, flap_window_ns=15 * M, flap_hold_ns=5 * M))
    t, log = T0, []
    for _ in range(3):  # the value hovers at the threshold: fire, clear, fire, clear ...
        log += _states(alerts.update([Sample(ENH, 1.1)], t))
        log += _states(alerts.update([], t + 30 * S))
        t += M
    # the third start makes it flapping: it stays firing instead of resolving 30 s later
    assert log == [("enhancement", "firing"), ("enhancement", "resolved")] * 2 + [("enhancement", "firing")]
    assert alerts.active()[0].annotations["flapping"] == "true"
    assert alerts.update([], t + 3 * M) == []  # 4 minutes after it last held
    assert _states(alerts.update([], t - M + 5 * M)) == [("enhancement", "resolved")]  # 5 minutes


def test_without_damping_the_same_hovering_value_pages_every_time():
    alerts = RuleAlerts(_rule(), Damping(flap_starts=0))
    log = []
    for k in range(3):
        log += _states(alerts.update([Sample(ENH, 1.1)], T0 + k * M))
        log += _states(alerts.update([], T0 + k * M + 30 * S))
    assert log == [("enhancement", "firing"), ("enhancement", "resolved")] * 3


def test_history_records_transitions_and_restores_active_alerts_after_a_restart(tmp_path):
    path = tmp_path / "alerts.db"
    history = AlertHistory(path)
    rule = _rule(for_ns=M)
    alerts = RuleAlerts(rule, Damping(flap_starts=0))
    for now, samples in ((T0, [Sample(ENH, 5.0), Sample(DEC, 1.5)]), (T0 + M, [Sample(ENH, 6.0)])):
        history.record(rule.name, alerts.update(samples, now), now)
    history.close()

    reopened = AlertHistory(path)
    log = reopened.transitions()
    assert [(t["labels"]["audio.stage"], t["state"]) for t in log] == [
        ("decode", "inactive"),
        ("enhancement", "firing"),
        ("decode", "pending"),
        ("enhancement", "pending"),
    ]  # newest first
    assert log[1]["value"] == 6.0 and log[1]["at"] == T0 + M
    restored = RuleAlerts(rule, Damping(flap_starts=0), reopened.restore(rule.name))
    (firing,) = restored.active()
    assert firing.state is AlertState.FIRING and firing.starts_at == T0 + M
    # the condition still holds after the restart: nothing new to report, so nothing is paged again
    assert restored.update([Sample(ENH, 6.5)], T0 + 2 * M) == []
    assert _states(restored.update([], T0 + 3 * M)) == [("enhancement", "resolved")]


def test_annotations_are_filled_per_alert():
    rule = _rule(annotations={"summary": "p95 {{ humanize $value }}s on {{ $labels.service }}",
                              "exact": '{{ printf "%.2f" $value }} / {{$value}}'})  # fmt: skip
    alerts = RuleAlerts(rule, Damping(flap_starts=0))
    (alert,) = alerts.update([Sample(ENH, 1234.5678)], T0)
    assert alert.annotations == {"summary": "p95 1.235ks on enh", "exact": "1234.57 / 1234.5678"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Labels.service }}",
        "{{ exec }}",
        "{{ $labels.service | js }}",
        '{{ printf "%s" $labels }}',
        "{{ x",
        "{{ index $labels error.type }}",
        "{{ $labels.error. }}",
    ],
)
def test_templates_using_anything_else_are_refused(template):
    with pytest.raises(ValueError, match="template"):
        check_template(template)


def test_dotted_attribute_names_are_read_by_path_or_by_index():
    labels = {"error.type": "ValueError", "audio.stage": "enhancement"}
    for template in ("{{ $labels.error.type }} in {{ $labels.audio.stage }}",
                     '{{ index $labels "error.type" }} in {{index $labels "audio.stage"}}'):  # fmt: skip
        check_template(template)
        assert render(template, labels, 1.0) == "ValueError in enhancement"


def test_humanize_and_render_edge_cases():
    assert humanize(0.00123) == "1.23m"
    assert humanize(-2_500_000) == "-2.5M"
    assert render("{{ $labels.missing }}|{{ $value }}", {}, float("nan")) == "|NaN"
