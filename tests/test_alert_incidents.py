"""Incidents: opened, resolved and reopened from a group's notifications; timeline, acks, notes, errors."""

from __future__ import annotations

import json

import pytest

from otel_audio.processors.alerting.incidents import Incidents
from otel_audio.processors.alerting.model import Alert, AlertState, Notification

S = 10**9
M = 60 * S
T0 = 1_800_000_000 * S
GROUP = '{}:{service="enh"}'


def _alert(name: str = "Slow", severity: str = "warning", state: AlertState = AlertState.FIRING) -> Alert:
    labels = {"alertname": name, "severity": severity, "service": "enh"}
    ends = T0 + 9 * M if state is AlertState.RESOLVED else 0
    return Alert(labels, {"summary": f"{name} in enh"}, state, T0, ends, 1.0)


def _note(*alerts: Alert, at: int = T0, group: str = GROUP, receiver: str = "team") -> Notification:
    status = "firing" if any(a.state is AlertState.FIRING for a in alerts) else "resolved"
    return Notification(receiver, group, {"service": "enh"}, alerts, status, at)


def _firing(**kw) -> Notification:
    return _note(_alert(), **kw)


def _resolved(**kw) -> Notification:
    return _note(_alert(state=AlertState.RESOLVED), **kw)


def _kinds(incidents: Incidents, incident_id: int) -> list[str]:
    return [e.kind for e in incidents.timeline(incident_id)]


@pytest.fixture
def incidents():
    store = Incidents(":memory:")
    yield store
    store.close()


def test_first_firing_notification_opens_an_incident(incidents):
    incident = incidents.observe(_firing(), T0)
    assert incident is not None
    assert (incident.status, incident.group_key, incident.opened_at) == ("open", GROUP, T0)
    assert incident.labels == {"alertname": "Slow", "severity": "warning", "service": "enh"}
    assert _kinds(incidents, incident.id) == ["opened", "notified"]


def test_later_firing_notifications_of_the_group_join_the_same_incident(incidents):
    first = incidents.observe(_firing(), T0)
    again = incidents.observe(_firing(at=T0 + 5 * M), T0 + 5 * M)
    assert again.id == first.id
    assert _kinds(incidents, first.id) == ["opened", "notified", "notified"]


def test_other_groups_open_their_own_incidents(incidents):
    one = incidents.observe(_firing(), T0)
    other = incidents.observe(_firing(group='{}:{service="dec"}'), T0)
    assert one.id != other.id


def test_resolved_notification_resolves_the_incident(incidents):
    opened = incidents.observe(_firing(), T0)
    resolved = incidents.observe(_resolved(), T0 + 10 * M)
    assert resolved.id == opened.id
    assert (resolved.status, resolved.resolved_at) == ("resolved", T0 + 10 * M)
    assert _kinds(incidents, opened.id) == ["opened", "notified", "notified", "resolved"]


def test_resolved_notification_without_an_incident_changes_nothing(incidents):
    assert incidents.observe(_resolved(), T0) is None
    assert incidents.list() == []


def test_group_firing_again_after_resolution_opens_a_new_incident(incidents):
    first = incidents.observe(_firing(), T0)
    incidents.observe(_resolved(), T0 + M)
    second = incidents.observe(_firing(), T0 + 2 * M)
    assert second.id != first.id
    assert incidents.get(first.id).status == "resolved"
    assert second.status == "open"
    assert _kinds(incidents, second.id) == ["opened", "notified"]


def test_severity_is_the_highest_of_the_groups_alerts_and_never_goes_down(incidents):
    incident = incidents.observe(_note(_alert("A", "warning"), _alert("B", "critical")), T0)
    assert incident.severity == "critical"
    incident = incidents.observe(_note(_alert("A", "info")), T0 + M)
    assert incident.severity == "critical"


def test_a_severity_outside_the_known_ones_is_kept_until_a_known_one_joins(incidents):
    incident = incidents.observe(_note(_alert("A", "page")), T0)
    assert incident.severity == "page"
    assert incidents.observe(_note(_alert("B", "info")), T0 + M).severity == "info"


def test_title_is_the_common_summary_or_alertname_and_group_labels(incidents):
    assert incidents.observe(_firing(), T0).title == "Slow in enh"
    mixed = _note(_alert("A"), _alert("B"), group="other")
    assert incidents.observe(mixed, T0).title == "service=enh"
    plain = Alert({"alertname": "Slow", "service": "dec"}, {}, AlertState.FIRING, T0)
    bare = Notification("team", "g3", {"service": "dec"}, (plain,), "firing", T0)
    assert incidents.observe(bare, T0).title == "Slow (service=dec)"


def test_timeline_records_details_in_order(incidents):
    incident = incidents.observe(_firing(receiver="slack"), T0)
    incidents.acknowledge(incident.id, "ana", T0 + M)
    incidents.add_note(incident.id, "ana", "rolled back v2", T0 + 2 * M)
    incidents.observe(_resolved(receiver="slack"), T0 + 3 * M)
    events = [(e.kind, e.at, e.details) for e in incidents.timeline(incident.id)]
    assert events == [
        ("opened", T0, {"group_key": GROUP, "alerts": 1}),
        ("notified", T0, {"channel": "slack", "level": None, "status": "firing"}),
        ("acknowledged", T0 + M, {"by": "ana"}),
        ("note", T0 + 2 * M, {"by": "ana", "text": "rolled back v2"}),
        ("notified", T0 + 3 * M, {"channel": "slack", "level": None, "status": "resolved"}),
        ("resolved", T0 + 3 * M, {}),
    ]


def test_acknowledge_records_who_and_when(incidents):
    incident = incidents.observe(_firing(), T0)
    acked = incidents.acknowledge(incident.id, "ana", T0 + M)
    assert (acked.status, acked.acknowledged_by, acked.acknowledged_at) == ("acknowledged", "ana", T0 + M)


def test_acknowledging_twice_keeps_the_first_ack(incidents):
    incident = incidents.observe(_firing(), T0)
    incidents.acknowledge(incident.id, "ana", T0 + M)
    again = incidents.acknowledge(incident.id, "bo", T0 + 2 * M)
    assert (again.acknowledged_by, again.acknowledged_at) == ("ana", T0 + M)
    assert _kinds(incidents, incident.id).count("acknowledged") == 1


def test_acknowledged_incident_still_resolves(incidents):
    incident = incidents.observe(_firing(), T0)
    incidents.acknowledge(incident.id, "ana", T0 + M)
    assert incidents.observe(_resolved(), T0 + 2 * M).status == "resolved"


def test_acknowledging_a_resolved_incident_is_an_error(incidents):
    incident = incidents.observe(_firing(), T0)
    incidents.observe(_resolved(), T0 + M)
    with pytest.raises(ValueError, match=r"incident \d+ was resolved at .*only open incidents"):
        incidents.acknowledge(incident.id, "ana", T0 + 2 * M)


def test_notes_are_accepted_on_resolved_incidents(incidents):
    incident = incidents.observe(_firing(), T0)
    incidents.observe(_resolved(), T0 + M)
    note = incidents.add_note(incident.id, "ana", "postmortem: PM-12", T0 + 2 * M)
    assert (note.kind, note.details["text"]) == ("note", "postmortem: PM-12")


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_note_is_an_error(incidents, text):
    incident = incidents.observe(_firing(), T0)
    with pytest.raises(ValueError, match="text is empty"):
        incidents.add_note(incident.id, "ana", text, T0)


def test_oversized_note_is_an_error(incidents):
    incident = incidents.observe(_firing(), T0)
    with pytest.raises(ValueError, match="at most 10000"):
        incidents.add_note(incident.id, "ana", "x" * 10_001, T0)


def test_empty_author_is_an_error(incidents):
    incident = incidents.observe(_firing(), T0)
    with pytest.raises(ValueError, match="by: expected the name"):
        incidents.acknowledge(incident.id, " ", T0)
    with pytest.raises(ValueError, match="by: expected the name"):
        incidents.add_note(incident.id, "", "text", T0)


@pytest.mark.parametrize("method", ["get", "timeline"])
@pytest.mark.parametrize("bad", [999, "999", "abc"])
def test_unknown_id_is_a_key_error_naming_it(incidents, method, bad):
    with pytest.raises(KeyError, match="no incident with id"):
        getattr(incidents, method)(bad)


def test_acking_or_noting_an_unknown_id_is_a_key_error(incidents):
    with pytest.raises(KeyError, match="no incident with id 7"):
        incidents.acknowledge(7, "ana", T0)
    with pytest.raises(KeyError, match="no incident with id 7"):
        incidents.add_note(7, "ana", "text", T0)


def test_ids_given_as_strings_are_accepted(incidents):
    incident = incidents.observe(_firing(), T0)
    assert incidents.get(str(incident.id)) == incident


def test_list_filters_by_status_and_since_newest_first(incidents):
    first = incidents.observe(_firing(group="a"), T0)
    second = incidents.observe(_firing(group="b"), T0 + M)
    third = incidents.observe(_firing(group="c"), T0 + 2 * M)
    incidents.observe(_resolved(group="a"), T0 + 3 * M)
    assert [i.id for i in incidents.list()] == [third.id, second.id, first.id]
    assert [i.id for i in incidents.list(status="resolved")] == [first.id]
    assert [i.id for i in incidents.list(status="open", since=T0 + 2 * M)] == [third.id]
    assert [i.id for i in incidents.list(limit=1)] == [third.id]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"status": "closed"}, "expected one of open, acknowledged, resolved"), ({"limit": 0}, "limit 0")],
)
def test_list_rejects_bad_arguments(incidents, kwargs, message):
    with pytest.raises(ValueError, match=message):
        incidents.list(**kwargs)


def test_to_dict_is_json_ready_with_rfc3339_and_ns_times(incidents):
    incident = incidents.observe(_firing(), T0)
    incidents.acknowledge(incident.id, "ana", T0 + 1500 * 10**6)
    data = json.loads(json.dumps(incidents.get(incident.id).to_dict()))
    assert data["opened_at"] == "2027-01-15T08:00:00Z"
    assert (data["opened_at_ns"], data["acknowledged_at"]) == (T0, "2027-01-15T08:00:01.5Z")
    assert (data["resolved_at"], data["resolved_at_ns"], data["acknowledged_by"]) == (None, None, "ana")
    event = json.loads(json.dumps(incidents.timeline(incident.id)[0].to_dict()))
    assert (event["kind"], event["at"], event["at_ns"]) == ("opened", "2027-01-15T08:00:00Z", T0)


def test_escalator_copies_are_not_recorded_again(incidents):
    incident = incidents.observe(_firing(), T0)
    copy = Notification("pager", GROUP, {}, (_alert(),), "firing", T0, extra={"incident_id": incident.id})
    assert incidents.observe(copy, T0) is None
    assert _kinds(incidents, incident.id) == ["opened", "notified"]


def test_latest_notification_is_kept_for_the_group(incidents):
    incident = incidents.observe(_firing(), T0)
    later = _note(_alert("A", "critical"), _alert("B"), at=T0 + M)
    incidents.observe(later, T0 + M)
    assert incidents.latest_notification(incident.id) == later


def test_incidents_and_timelines_survive_a_restart(tmp_path):
    path = tmp_path / "incidents.sqlite"
    store = Incidents(path)
    incident = store.observe(_firing(), T0)
    store.acknowledge(incident.id, "ana", T0 + M)
    store.close()
    reopened = Incidents(path)
    assert reopened.get(incident.id).status == "acknowledged"
    assert reopened.observe(_firing(), T0 + 2 * M).id == incident.id
    assert _kinds(reopened, incident.id) == ["opened", "notified", "acknowledged", "notified"]
    reopened.close()


def test_a_failed_transaction_leaves_nothing_behind(incidents):
    incident = incidents.observe(_firing(), T0)
    with pytest.raises(RuntimeError), incidents.transaction():
        incidents.add_note(incident.id, "ana", "half done", T0)
        raise RuntimeError("boom")
    assert _kinds(incidents, incident.id) == ["opened", "notified"]
