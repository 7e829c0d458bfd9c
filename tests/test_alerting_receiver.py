"""Alerting inside a real receiver: OTLP in, webhook out; the rules, alerts, silences and incidents API."""

from __future__ import annotations

import time

import pytest
import requests

from tests.external import RecordingServer
from tests.receiver_helpers import api, gauge, grpc_export_metrics, metrics_request

S = 10**9


SLOW = 'avg(audio.stage.duration{audio.stage="enhancement"}, 1m) > 0.5'
NOTE = {"summary": '{{ $labels.service }} at {{ printf "%.2f" $value }}s'}


def _alerting(hook: RecordingServer, **more) -> dict:
    options = {
        "channels": {
            "ops": {"type": "webhook", "url": hook.url("/ops")},
            "pager": {"type": "webhook", "url": hook.url("/pager")},
        },
        "route": {
            "receiver": "ops",
            "group_by": ["alertname", "service"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "rules": [{"name": "SlowStage", "condition": SLOW, "severity": "critical", "annotations": NOTE}],
    }
    options.update(more)
    return {"alerting": options}


def _send(receiver, service: str, value: float, stage: str = "enhancement") -> None:
    now = time.time_ns()
    point = [(now, value, {"audio.stage": stage})]
    grpc_export_metrics(receiver.grpc_port, metrics_request(service, [gauge("audio.stage.duration", point)]))


def _post(receiver, path: str, body: dict) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{receiver.api_port}{path}", json=body, timeout=10)


def test_a_breaching_point_reaches_the_webhook_as_alertmanager_v4_and_resolves(start_receiver, hook):
    # the test drives time itself: no ticker re-evaluating on the real clock meanwhile
    receiver = start_receiver(processors=["selfmon", _alerting(hook), "store"], tick_interval_s=3600)
    _send(receiver, "enhancer", 0.2)  # below the threshold: nothing
    _send(receiver, "enhancer", 1.4)  # the 1-minute average is now 0.8
    (request,) = hook.wait_for(1, "/ops")
    body = request.body
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    assert body["groupLabels"] == {"alertname": "SlowStage", "service": "enhancer"}
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "SlowStage", "severity": "critical", "service": "enhancer",
                               "audio.stage": "enhancement"}  # fmt: skip
    assert alert["annotations"]["summary"] == "enhancer at 0.80s"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    firing = api(receiver, "/api/v1/alerts").json()["alerts"]
    assert [(a["labels"]["alertname"], a["state"]) for a in firing] == [("SlowStage", "firing")]
    assert firing[0]["value"] == pytest.approx(0.8)
    incidents = api(receiver, "/api/v1/incidents").json()["incidents"]
    assert [(i["title"] != "", i["status"], i["severity"]) for i in incidents] == [(True, "open", "critical")]

    # the slow points leave the 1-minute window: the ticker evaluates on the wall clock and resolves
    receiver.chain.tick(time.time_ns() + 2 * 60 * S)
    resolved = hook.wait_for(2, "/ops")[1].body
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    history = api(receiver, "/api/v1/alerts/history", rule="SlowStage").json()["transitions"]
    assert [t["state"] for t in history] == ["resolved", "firing"]
    assert api(receiver, "/api/v1/incidents").json()["incidents"][0]["status"] == "resolved"


def test_rules_made_through_the_api_are_validated_take_effect_and_survive_a_restart(
    start_receiver, hook, tmp_path
):
    data = tmp_path / "d"
    receiver = start_receiver(data_dir=data, processors=["selfmon", _alerting(hook, rules=[]), "store"])
    bad = _post(receiver, "/api/v1/rules", {"name": "Bad", "condition": "avg(audio.stage.duration, 5m) >"})
    assert bad.status_code == 400
    assert "rule.condition: line 1, column" in bad.json()["error"] and "expected" in bad.json()["error"]
    hostile = _post(
        receiver, "/api/v1/rules", {"name": "X", "condition": '__import__("os").system("id") > 0'}
    )
    assert hostile.status_code == 400
    assert "line 1, column 17: unexpected character '.'" in hostile.json()["error"]
    call = _post(receiver, "/api/v1/rules", {"name": "X", "condition": 'exec("import os") > 0'})
    assert call.status_code == 400 and "unknown function exec" in call.json()["error"]
    rule = {
        "name": "Quiet",
        "condition": "last(audio.stage.duration) > 2",
        "channels": ["pager"],
        "for": "0s",
    }
    created = _post(receiver, "/api/v1/rules", rule)
    assert created.status_code == 201, created.text
    assert _post(receiver, "/api/v1/rules", rule).status_code == 409
    _send(receiver, "denoiser", 3.0, stage="load_audio")
    pager = hook.wait_for(1, "/pager")[0].body  # the rule's own channel, in front of the tree
    assert pager["alerts"][0]["labels"]["alertname"] == "Quiet"
    test = _post(receiver, "/api/v1/rules/test", {"condition": "last(audio.stage.duration) > 1"}).json()
    assert [s["labels"]["service"] for s in test["samples"]] == ["denoiser"]
    receiver.stop(grace_s=1)

    again = start_receiver(data_dir=data, processors=["selfmon", _alerting(hook, rules=[]), "store"])
    names = [r["name"] for r in api(again, "/api/v1/rules").json()["rules"]]
    assert names == ["Quiet"]
    firing = api(again, "/api/v1/alerts").json()["alerts"]
    assert [a["labels"]["alertname"] for a in firing] == ["Quiet"]  # restored, not paged again
    assert len(hook.received("/pager")) == 1
    assert (
        requests.delete(f"http://127.0.0.1:{again.api_port}/api/v1/rules/Quiet", timeout=10).status_code
        == 204
    )
    assert api(again, "/api/v1/rules").json()["rules"] == []


def test_a_silence_mutes_matching_alerts_and_an_ack_is_on_the_incident_timeline(start_receiver, hook):
    receiver = start_receiver(processors=["selfmon", _alerting(hook), "store"])
    body = {"matchers": ['service="batch"'], "duration": "1h", "createdBy": "ops", "comment": "reprocessing"}
    silence = _post(receiver, "/api/v1/silences", body)
    assert silence.status_code == 201, silence.text
    _send(receiver, "batch", 2.0)
    _send(receiver, "enhancer", 2.0)
    (request,) = hook.wait_for(1, "/ops")
    assert request.body["alerts"][0]["labels"]["service"] == "enhancer"
    alerts = {a["labels"]["service"]: a for a in api(receiver, "/api/v1/alerts").json()["alerts"]}
    assert alerts["batch"]["silencedBy"] == [silence.json()["id"]] and alerts["enhancer"]["silencedBy"] == []
    (incident,) = api(receiver, "/api/v1/incidents").json()["incidents"]
    acked = _post(receiver, f"/api/v1/incidents/{incident['id']}/ack", {"by": "ana"})
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    note = _post(receiver, f"/api/v1/incidents/{incident['id']}/notes", {"by": "ana", "text": "rolled back"})
    assert note.status_code == 201
    detail = api(receiver, f"/api/v1/incidents/{incident['id']}").json()
    assert [e["kind"] for e in detail["timeline"]] == ["opened", "notified", "acknowledged", "note"]
    bad = _post(receiver, "/api/v1/silences", {"matchers": ['service=~"("'], "duration": "1h"})
    assert bad.status_code == 400 and "regex" in bad.json()["error"]


def test_channel_test_send_and_config_errors(start_receiver, hook, tmp_path):
    from otel_audio.receiver.config import ConfigError, load_config
    from otel_audio.receiver.service import Receiver

    receiver = start_receiver(processors=["selfmon", _alerting(hook), "store"])
    sent = _post(receiver, "/api/v1/channels/pager/test", {})
    assert sent.status_code == 200 and hook.wait_for(1, "/pager")[0].body["alerts"][0]["labels"]["alertname"]
    assert _post(receiver, "/api/v1/channels/sms/test", {}).status_code == 404
    for options, message in (
        (
            {"rules": [{"name": "A", "condition": "x >> 1"}]},
            r"processors\.alerting: rules\[0\]\.condition: line 1",
        ),
        ({"route": {"receiver": "nobody"}}, "processors.alerting: .*nobody"),
        ({"colour": 1}, "alerting option colour"),
    ):
        config = load_config(
            None, storage__data_dir=str(tmp_path / "x"), processors=[_alerting(hook, **options)]
        )
        with pytest.raises(ConfigError, match=message):
            Receiver(config).start()


def test_notifications_a_down_channel_missed_are_delivered_after_a_restart(start_receiver, hook, tmp_path):
    from tests.external import Reply

    data = tmp_path / "d"
    hook.script("/ops", *[Reply(503, body="maintenance")] * 3)  # the webhook is down for a while
    receiver = start_receiver(data_dir=data, processors=["selfmon", _alerting(hook), "store"])
    _send(receiver, "enhancer", 2.0)
    hook.wait_for(1, "/ops")  # the first attempt was refused with 503
    pending = api(receiver, "/api/v1/notifications").json()["deliveries"]
    assert [(d["channel"], d["state"]) for d in pending] == [("ops", "pending")]
    receiver.stop(grace_s=1)  # the receiver goes down with the notification undelivered

    again = start_receiver(data_dir=data, processors=["selfmon", _alerting(hook), "store"])
    delivered = hook.wait_for(4, "/ops", timeout=30)  # 3 refusals, then the delivery
    assert len({r.headers.get("Idempotency-Key") for r in delivered}) == 1  # one notification, retried
    assert delivered[-1].body["alerts"][0]["labels"]["service"] == "enhancer"
    states = [d["state"] for d in api(again, "/api/v1/notifications").json()["deliveries"]]
    # one delivery: the restart found its rule windows as they were (read back from the store), so
    # the alert that still holds was neither resolved nor sent again
    assert states == ["delivered"]
    assert [a["state"] for a in api(again, "/api/v1/alerts").json()["alerts"]] == ["firing"]
    assert len(hook.received("/ops")) == 4


def test_the_documented_configuration_is_accepted_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    import yaml

    from otel_audio.processors.alerting.processor import Alerting

    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerting.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, flags=re.DOTALL).group(1)
    (entry,) = [p for p in yaml.safe_load(block)["processors"] if isinstance(p, dict) and "alerting" in p]
    for name in ("SLACK_WEBHOOK_URL", "PD_ROUTING_KEY", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, "https://hooks.example.com/x" if name == "SLACK_WEBHOOK_URL" else "secret")
    alerting = Alerting(entry["alerting"], tmp_path)
    try:
        assert [r.name for r in alerting.rules()] == [
            "SlowEnhancement",
            "QualityAnomaly",
            "MemoryRunsOutWithinAnHour",
        ]
        assert sorted(alerting.channels) == ["ops-mail", "pager", "slack"]
    finally:
        alerting.close()


def test_a_rule_added_at_run_time_judges_the_history_already_stored(start_receiver, hook):
    chain = ["selfmon", _alerting(hook, rules=[]), "store"]
    receiver = start_receiver(processors=chain, tick_interval_s=3600)
    for value in (3.0, 5.0):  # stored before any rule reads the metric
        _send(receiver, "enhancer", value)
    rule = {"name": "SlowOverall", "condition": "avg(audio.stage.duration, 10m) > 3.5"}
    dry = _post(receiver, "/api/v1/rules/test", {"condition": rule["condition"]}).json()["samples"]
    assert [(s["labels"]["service"], s["value"]) for s in dry] == [("enhancer", pytest.approx(4.0))]
    assert _post(receiver, "/api/v1/rules", rule).status_code == 201
    receiver.chain.tick(time.time_ns())  # the ticker's evaluation, on the wall clock
    (request,) = hook.wait_for(1, "/ops")
    (alert,) = request.body["alerts"]
    assert alert["labels"]["alertname"] == "SlowOverall"
    assert api(receiver, "/api/v1/alerts").json()["alerts"][0]["value"] == pytest.approx(4.0)
