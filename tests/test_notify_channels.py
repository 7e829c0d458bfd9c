"""Each channel delivers, to a real local server, the request its receiver documents, field by field."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from otel_audio.notify.channels import (
    AlertmanagerChannel,
    DeliveryError,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
    channel_from_config,
    pagerduty_event,
    slack_payload,
)
from otel_audio.notify.channels.base import parse_retry_after, rfc3339
from otel_audio.processors.alerting.model import Alert, AlertState, Notification
from tests.external import RecordingServer, Reply, free_port, require_external

T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
T0_TEXT = "2023-11-14T22:13:20Z"


def alert(name: str = "HighLatency", state: AlertState = AlertState.FIRING, **labels: str) -> Alert:
    labels = {"alertname": name, "severity": "critical", "service": "enhancement", **labels}
    ends = T0 + 300 * 10**9 + 500_000_000 if state is AlertState.RESOLVED else 0
    return Alert(
        labels=labels,
        annotations={"summary": f"{name} is high", "runbook_url": "http://runbooks/latency"},
        state=state,
        starts_at=T0,
        ends_at=ends,
        value=612.0,
        generator_url="http://127.0.0.1:8080/rules/latency",
    )


def notify(*alerts: Alert, status: str = "firing", **extra: str) -> Notification:
    return Notification(
        receiver="team-audio",
        group_key='{}:{alertname="HighLatency"}',
        group_labels={"alertname": "HighLatency"},
        alerts=alerts or (alert(),),
        status=status,
        created_at=T0 + 10**9,
        extra=dict(extra),
    )


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_posts_alertmanager_version_4_payload(server, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    channel = channel_from_config(
        "hook",
        {
            "type": "webhook",
            "url": server.url("/hook"),
            "bearer_token": "env:HOOK_TOKEN",
            "headers": {"X-Team": "a"},
        },
    )
    sent = notify(alert(instance="a"), alert(instance="b"))
    channel.send(sent)
    (request,) = server.wait_for(1, "/hook")
    body = request.body
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4"
    assert body["groupKey"] == '{}:{alertname="HighLatency"}'
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["receiver"] == "team-audio"
    assert body["groupLabels"] == {"alertname": "HighLatency"}
    assert body["commonLabels"] == {
        "alertname": "HighLatency",
        "severity": "critical",
        "service": "enhancement",
    }
    assert body["commonAnnotations"] == {
        "summary": "HighLatency is high",
        "runbook_url": "http://runbooks/latency",
    }
    assert body["externalURL"] == "http://127.0.0.1:8080"
    first = body["alerts"][0]
    assert set(first) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert first["status"] == "firing"
    assert first["labels"]["instance"] == "a"
    assert first["startsAt"] == T0_TEXT
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["generatorURL"] == "http://127.0.0.1:8080/rules/latency"
    assert first["fingerprint"] == sent.alerts[0].fingerprint
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["X-Team"] == "a"
    assert request.headers["Idempotency-Key"] == sent.key


def test_webhook_resolved_alert_carries_its_end_time(server):
    WebhookChannel("hook", server.url("/hook")).send(
        notify(alert(state=AlertState.RESOLVED), status="resolved")
    )
    body = server.wait_for(1)[0].body
    assert body["status"] == "resolved"
    assert body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2023-11-14T22:18:20.5Z"


def test_webhook_max_alerts_counts_the_rest_as_truncated(server):
    WebhookChannel("hook", server.url("/hook"), max_alerts=1).send(
        notify(alert(instance="a"), alert(instance="b"))
    )
    body = server.wait_for(1)[0].body
    assert len(body["alerts"]) == 1
    assert body["truncatedAlerts"] == 1


# -- HTTP failures ---------------------------------------------------------------------------------


def test_a_4xx_is_final(server):
    server.script("/hook", Reply(400, body="bad"))
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel("hook", server.url("/hook")).send(notify())
    assert caught.value.retryable is False
    assert "HTTP 400: bad" in str(caught.value)


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_408_429_and_5xx_are_retryable_with_retry_after(server, status):
    server.script("/hook", Reply(status, {"Retry-After": "7"}))
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel("hook", server.url("/hook")).send(notify())
    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 7.0


def test_a_refused_connection_is_retryable():
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel("hook", f"http://127.0.0.1:{free_port()}/hook", timeout_s=2).send(notify())
    assert caught.value.retryable is True


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_times_are_rfc3339_utc_as_go_writes_them():
    assert rfc3339(T0) == T0_TEXT
    assert rfc3339(T0 + 123_456_000) == "2023-11-14T22:13:20.123456Z"


# -- Slack -----------------------------------------------------------------------------------------


def test_slack_posts_text_and_blocks(server):
    SlackChannel("slack", server.url("/slack"), channel="#audio", username="otel-audio").send(notify())
    body = server.wait_for(1, "/slack")[0].body
    assert set(body) == {"text", "blocks", "channel", "username"}
    assert body["text"] == "[FIRING:1] HighLatency"
    assert body["channel"] == "#audio"
    assert body["username"] == "otel-audio"
    header, section, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "[FIRING:1] HighLatency"}}
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    assert "*firing* HighLatency" in section["text"]["text"]
    assert "HighLatency is high" in section["text"]["text"]
    assert "<http://runbooks/latency|runbook>" in section["text"]["text"]
    assert context["type"] == "context"
    assert context["elements"][0]["type"] == "mrkdwn"


def test_slack_keeps_blocks_within_slack_limits():
    many = tuple(alert(instance=str(i)) for i in range(60))
    long_group = Notification("r", "g", {"alertname": "x" * 400}, many, "firing", T0)
    body = slack_payload(long_group)
    assert len(body["blocks"]) <= 50
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    assert "40 more alerts not shown" in body["blocks"][-1]["elements"][0]["text"]


# -- PagerDuty -------------------------------------------------------------------------------------


def test_pagerduty_trigger_event_fields(server, monkeypatch):
    monkeypatch.setenv("PD_KEY", "R0UT1NGKEY")
    channel = channel_from_config(
        "pd",
        {
            "type": "pagerduty",
            "routing_key": "env:PD_KEY",
            "url": server.url("/v2/enqueue"),
            "client_url": "http://otel-audio:8080",
        },
    )
    server.script("/v2/enqueue", Reply(202, body='{"status":"success","message":"Event processed"}'))
    sent = notify(alert(job="audio"))
    channel.send(sent)
    body = server.wait_for(1, "/v2/enqueue")[0].body
    assert set(body) == {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "client",
        "client_url",
        "links",
    }
    assert body["routing_key"] == "R0UT1NGKEY"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == hashlib.sha256(sent.group_key.encode()).hexdigest()
    assert body["client"] == "otel-audio"
    assert body["client_url"] == "http://otel-audio:8080"
    assert body["links"] == [
        {"href": "http://127.0.0.1:8080/rules/latency", "text": "HighLatency source"},
        {"href": "http://runbooks/latency", "text": "HighLatency runbook"},
    ]
    payload = body["payload"]
    assert payload["summary"] == "[FIRING:1] HighLatency: HighLatency is high"
    assert payload["source"] == "enhancement"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == T0_TEXT
    assert payload["component"] == "enhancement"
    assert payload["group"] == "audio"
    assert payload["class"] == "HighLatency"
    details = payload["custom_details"]
    assert details["num_firing"] == 1
    assert details["num_resolved"] == 0
    assert "instance" not in details["firing"] and "service=enhancement" in details["firing"]


def test_pagerduty_resolve_uses_the_triggers_dedup_key_and_nothing_else(server):
    channel = PagerDutyChannel("pd", "KEY", url=server.url("/v2/enqueue"))
    channel.send(notify())
    channel.send(notify(alert(state=AlertState.RESOLVED), status="resolved"))
    trigger, resolve = (r.body for r in server.wait_for(2))
    assert resolve == {"routing_key": "KEY", "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


def test_pagerduty_acknowledge_comes_from_the_notification():
    event = pagerduty_event(notify(event_action="acknowledge"), "KEY")
    assert event["event_action"] == "acknowledge"
    assert set(event) == {"routing_key", "event_action", "dedup_key"}


def test_pagerduty_maps_severity_and_caps_the_summary():
    noisy = Alert({"alertname": "A", "severity": "page"}, {"summary": "y" * 2000}, AlertState.FIRING, T0)
    event = pagerduty_event(notify(noisy), "KEY")
    assert event["payload"]["severity"] == "critical"
    assert len(event["payload"]["summary"]) == 1024
    odd = Alert({"alertname": "A", "severity": "sev9"}, {}, AlertState.FIRING, T0)
    assert pagerduty_event(notify(odd), "KEY", default_severity="warning")["payload"]["severity"] == "warning"


# -- email over SMTP with STARTTLS and AUTH --------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_server(tmp_path_factory) -> Iterator[tuple[int, str, _Inbox]]:
    """aiosmtpd with STARTTLS required and AUTH (user ``alerts``, password ``pw``); yields port, CA file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("smtp") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def authenticate(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"alerts", b"pw"), handled=False)

    inbox = _Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    yield port, str(ca_file), inbox
    controller.stop()


def _email_channel(port: int, ca_file: str, password: str = "env:SMTP_PW") -> EmailChannel:
    return channel_from_config(
        "mail",
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "from": "otel-audio@example.org",
            "to": ["oncall@example.org", "lead@example.org"],
            "username": "alerts",
            "password": password,
            "ca_file": ca_file,
            "subject": "{title} ({count} alerts)",
        },
    )


def test_email_is_sent_over_starttls_with_auth_as_multipart(smtp_server, monkeypatch):
    port, ca_file, inbox = smtp_server
    monkeypatch.setenv("SMTP_PW", "pw")
    sent = notify()
    before = len(inbox.messages)
    _email_channel(port, ca_file).send(sent)
    mail_from, rcpt, raw = inbox.messages[before]
    assert mail_from == "otel-audio@example.org"
    assert rcpt == ["oncall@example.org", "lead@example.org"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "[FIRING:1] HighLatency (1 alerts)"
    assert message["From"] == "otel-audio@example.org"
    assert message["To"] == "oncall@example.org, lead@example.org"
    assert message["Message-ID"] == f"<{sent.key}@example.org>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime.timestamp() == T0 / 1e9 + 1
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "[firing] HighLatency since 2023-11-14T22:13:20Z" in text
    assert "summary: HighLatency is high" in text
    assert "<h2>[FIRING:1] HighLatency</h2>" in html


def test_email_with_a_wrong_password_is_final(smtp_server, monkeypatch):
    port, ca_file, _ = smtp_server
    monkeypatch.setenv("SMTP_PW", "wrong")
    with pytest.raises(DeliveryError) as caught:
        _email_channel(port, ca_file).send(notify())
    assert caught.value.retryable is False
    assert "535" in str(caught.value)


def test_email_to_a_closed_port_is_retryable(tmp_path):
    channel = EmailChannel("mail", "127.0.0.1", free_port(), sender="a@b.c", to=["d@e.f"], timeout_s=2)
    with pytest.raises(DeliveryError) as caught:
        channel.send(notify())
    assert caught.value.retryable is True


# -- Alertmanager API v2 ---------------------------------------------------------------------------


def test_alertmanager_channel_posts_postable_alerts(server):
    channel = AlertmanagerChannel("am", server.url())
    channel.send(notify(alert(), alert(state=AlertState.RESOLVED, instance="b")))
    (request,) = server.wait_for(1, "/api/v2/alerts")
    firing, resolved = request.body
    assert firing == {
        "labels": {"alertname": "HighLatency", "severity": "critical", "service": "enhancement"},
        "annotations": {"summary": "HighLatency is high", "runbook_url": "http://runbooks/latency"},
        "startsAt": T0_TEXT,
        "generatorURL": "http://127.0.0.1:8080/rules/latency",
    }
    assert resolved["endsAt"] == "2023-11-14T22:18:20.5Z"
    assert channel.resend_interval_s == 150.0


@pytest.fixture
def alertmanager(server, tmp_path) -> Iterator[str]:
    """Debian's prometheus-alertmanager on a free port, its receiver a webhook to ``server``."""
    binary = require_external("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: test\n"
        "  group_by: [alertname]\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: test\n"
        "    webhook_configs:\n"
        f"      - url: {server.url('/from-alertmanager')}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("alertmanager did not become ready in 20 s")


def test_a_real_alertmanager_receives_our_alerts_and_delivers_them(server, alertmanager):
    channel = channel_from_config("am", {"type": "alertmanager", "url": alertmanager})
    channel.send(notify(alert(instance="a")))
    delivered = server.wait_for(1, "/from-alertmanager", timeout=20)[0].body
    assert delivered["version"] == "4"
    assert delivered["status"] == "firing"
    assert delivered["receiver"] == "test"
    (got,) = delivered["alerts"]
    assert got["labels"] == {
        "alertname": "HighLatency",
        "severity": "critical",
        "service": "enhancement",
        "instance": "a",
    }
    assert got["annotations"]["summary"] == "HighLatency is high"
    assert got["startsAt"] == T0_TEXT
    assert got["generatorURL"] == "http://127.0.0.1:8080/rules/latency"

    channel.send(notify(alert(state=AlertState.RESOLVED, instance="a"), status="resolved"))
    resolved = [r.body for r in server.wait_for(2, "/from-alertmanager", timeout=20)][-1]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] == "2023-11-14T22:18:20.5Z"


# -- configuration errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "carrier-pigeon"}, "channels.x.type: expected one of webhook, slack"),
        ({"type": "webhook"}, "channels.x.url: required"),
        ({"type": "webhook", "url": "ftp://h"}, "channels.x.url: expected an http:// or https:// URL"),
        ({"type": "webhook", "url": "http://h", "tiemout": 3}, "channels.x.tiemout: unknown field"),
        ({"type": "webhook", "url": "http://h", "timeout": "soon"}, "channels.x.timeout: expected seconds"),
        (
            {"type": "slack", "webhook_url": "env:NO_SUCH_VAR_X"},
            "channels.x.webhook_url: environment variable",
        ),
        (
            {"type": "pagerduty", "routing_key": "k", "severity": "sev1"},
            "channels.x.severity: expected one of",
        ),
        (
            {"type": "pagerduty", "routing_key": "k", "severity_map": {"p1": "big"}},
            "channels.x.severity_map.p1",
        ),
        ({"type": "email", "host": "h", "from": "me", "to": ["a@b"]}, "channels.x.from: expected an email"),
        ({"type": "email", "host": "h", "from": "a@b", "to": []}, "channels.x.to: expected a non-empty list"),
        (
            {"type": "email", "host": "h", "from": "a@b", "to": "c@d", "subject": "{nope}"},
            "channels.x.subject",
        ),
        ({"type": "alertmanager", "url": "http://h", "resend_interval": "2x"}, "channels.x.resend_interval"),
    ],
)
def test_bad_channel_config_names_channel_and_field(config, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        channel_from_config("x", config)


def test_durations_read_prometheus_notation():
    channel = channel_from_config(
        "am", {"type": "alertmanager", "url": "http://h", "resend_interval": "2m30s"}
    )
    assert channel.resend_interval_s == 150.0


def test_secrets_come_from_files(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("FROMFILE\n")
    channel = channel_from_config("pd", {"type": "pagerduty", "routing_key": f"file:{secret}"})
    assert channel.routing_key == "FROMFILE"
    assert Path(secret).exists()


def test_slack_escapes_user_text_so_it_forms_no_links_or_mentions():
    risky = Alert({"alertname": "A<b>"}, {"summary": "p95 > 500 & <!channel>"}, AlertState.FIRING, T0)
    text = slack_payload(notify(risky))["blocks"][1]["text"]["text"]
    assert "p95 &gt; 500 &amp; &lt;!channel&gt;" in text
    assert "<!channel>" not in text


def test_email_with_auth_configured_but_not_offered_is_final():
    """A server offering no AUTH (aiosmtpd without an authenticator) never will: the error is final."""
    controller = Controller(_Inbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        channel = EmailChannel(
            "mail",
            "127.0.0.1",
            controller.port,
            sender="a@b.c",
            to=["d@e.f"],
            starttls=False,
            username="u",
            password="p",
        )
        with pytest.raises(DeliveryError) as caught:
            channel.send(notify())
        assert caught.value.retryable is False
    finally:
        controller.stop()


def test_email_never_sends_in_clear_when_starttls_is_required_but_not_offered():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        channel = EmailChannel("mail", "127.0.0.1", controller.port, sender="a@b.c", to=["d@e.f"])
        with pytest.raises(DeliveryError, match="does not offer STARTTLS") as caught:
            channel.send(notify())
        assert caught.value.retryable is False
        assert inbox.messages == []
    finally:
        controller.stop()
