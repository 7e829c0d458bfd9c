"""Secrets never show up in logs or API answers.

A real receiver gets its tokens and every channel secret from the environment and from files:
webhook and Slack URLs (their paths are the credential), a URL with a password in it, a bearer
token, a PagerDuty routing key and an SMTP password. Every channel is made to fail (an HTTP 400,
a 500, a refused connection), both through ``POST /api/v1/channels/{name}/test`` and through the
outbox after a real alert, so each error path that names a URL or a server runs. Then every
captured log record (tracebacks included) and every API answer is searched for each secret.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest
import requests

from otel_audio.api.app import build_api_app
from otel_audio.notify.channels.base import redact_url, scrub_url
from tests.external import RecordingServer, Reply, free_port
from tests.receiver_helpers import gauge, grpc_export_metrics, metrics_request
from tests.test_security import _routes

ADMIN = "admin-token-c0ffee-5ecret"
INGEST = "ingest-token-5ecret-feed"


@pytest.fixture
def outside() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.stop()


def _secrets_and_config(outside: RecordingServer, tmp_path, monkeypatch) -> tuple[list[str], dict]:
    dead = free_port()  # nothing listens here: connections are refused
    secrets = {
        "HOOK_URL": outside.url("/hooks/S3CR3T-hook-path"),
        "HOOK_TOKEN": "hook-bearer-5ecret",
        "PD_KEY": "pd-routing-key-5ecret",
        "SMTP_PASS": "smtp-password-5ecret",
        "BASIC_URL": f"http://alice:basic-password-5ecret@127.0.0.1:{dead}/alerts",
        "ADMIN_TOKEN": ADMIN,
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    slack_url = f"http://127.0.0.1:{dead}/services/T000/B000/S3CR3T-slack-path"
    (tmp_path / "slack").write_text(slack_url + "\n")
    (tmp_path / "ingest").write_text(INGEST + "\n")
    outside.script("/hooks/S3CR3T-hook-path", *[Reply(400, body="bad payload")] * 20)
    outside.script("/pd", *[Reply(500, body="try later")] * 20)
    fast = {"min_backoff": "0.1s", "max_backoff": "0.2s"}
    channels = {
        "hook": {"type": "webhook", "url": "env:HOOK_URL", "bearer_token": "env:HOOK_TOKEN", **fast},
        "chat": {"type": "slack", "webhook_url": f"file:{tmp_path / 'slack'}", **fast},
        "pager": {"type": "pagerduty", "routing_key": "env:PD_KEY", "url": outside.url("/pd"), **fast},
        "mail": {
            "type": "email",
            "host": "127.0.0.1",
            "port": dead,
            "starttls": False,
            "from": "otel-audio@example.org",
            "to": ["oncall@example.org"],
            "username": "otel-audio",
            "password": "env:SMTP_PASS",
            **fast,
        },
        "basic": {"type": "webhook", "url": "env:BASIC_URL", **fast},
    }
    alerting = {
        "channels": channels,
        "route": {"receiver": "all", "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": {"all": list(channels)},
        "rules": [],
    }
    config = {
        "server__auth__tokens": [
            "env:ADMIN_TOKEN",
            {"token": f"file:{tmp_path / 'ingest'}", "scope": "ingest"},
        ],
        "processors": ["selfmon", {"alerting": alerting}, "store"],
    }
    values = [*secrets.values(), slack_url, INGEST, "S3CR3T", "5ecret"]
    return values, config


def _get(receiver, path: str) -> requests.Response:
    return requests.get(
        f"http://127.0.0.1:{receiver.api_port}{path}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )


def _post(receiver, path: str, body: dict | None = None) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{receiver.api_port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )


def test_no_secret_reaches_a_log_line_or_an_api_answer(
    start_receiver, outside, tmp_path, monkeypatch, caplog
):
    secrets, config = _secrets_and_config(outside, tmp_path, monkeypatch)
    answers: list[str] = []
    with caplog.at_level(logging.INFO):  # what `otel-audio serve` logs (urllib3's DEBUG names paths)
        receiver = start_receiver(**config)
        for name in ("hook", "chat", "pager", "mail", "basic"):
            tested = _post(receiver, f"/api/v1/channels/{name}/test")
            assert tested.status_code == 502, (name, tested.text)  # every channel fails, saying why
            answers.append(tested.text)
        rule = {"name": "Loud", "condition": "level > 0", "severity": "critical"}
        assert _post(receiver, "/api/v1/rules", rule).status_code == 201
        point = [(time.time_ns(), 5.0, {})]
        grpc_export_metrics(receiver.grpc_port, metrics_request("svc", [gauge("level", point)]), token=INGEST)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = _get(receiver, "/api/v1/notifications").json()["deliveries"]
            failed = {
                r["channel"]
                for r in rows
                if (r.get("last_error") and r["attempts"] >= 2) or r.get("failed_at")
            }
            if failed >= {"hook", "chat", "pager", "mail", "basic"}:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"not every channel failed a delivery in time: {rows}")
        for method, template in sorted(set(_routes(build_api_app(receiver).router.routes))):
            if method != "GET" or template == "/api/v1/stream":  # every read, a route added later too
                continue
            reply = _get(receiver, re.sub(r"\{[^}]+\}", "hook", template))
            assert reply.status_code not in (401, 403), (template, reply.status_code)
            answers.append(reply.text)
        receiver.stop(grace_s=1)
    assert len(outside.received("/hooks/S3CR3T-hook-path")) >= 2  # the failures really happened
    logs = "\n".join(logging.Formatter("%(message)s").format(record) for record in caplog.records)
    assert "hook" in logs or "outbox" in logs  # the failures were logged, so the scan means something
    for secret in secrets:
        assert secret not in logs, f"a secret is in the logs: {secret!r}"
        for answer in answers:
            assert secret not in answer, f"a secret is in an API answer: {secret!r}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
        ("http://user:pw@example.org:8080/x?token=abc", "http://example.org:8080/…"),
        ("not a url", "<url>"),
    ],
)
def test_urls_are_shown_by_scheme_and_host_only(url, shown):
    assert redact_url(url) == shown


def test_transport_errors_lose_the_url_but_keep_the_reason():
    url = "http://user:pw-5ecret@127.0.0.1:9/services/T0/B0/S3CR3T?token=q-5ecret"
    try:
        requests.post(url, timeout=2)
    except requests.RequestException as exc:
        message = str(exc)
    assert "S3CR3T" in message  # what urllib3 says names the path: the reason for scrubbing
    scrubbed = scrub_url(message, url)
    assert "S3CR3T" not in scrubbed and "5ecret" not in scrubbed
    assert "Connection refused" in scrubbed or "Errno" in scrubbed
