"""Generic webhook: Alertmanager's webhook payload (version 4), so any Alertmanager receiver works.

The body is what Alertmanager 0.25 posts to a ``webhook_config`` (no ``notification_reason``,
which later releases add)::

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing",
     "receiver": "team-audio", "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": "http://127.0.0.1:8080",
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...},
                 "startsAt": "2026-11-27T07:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "...", "fingerprint": "1a30ba71cca2921f"}]}

Each request carries ``Idempotency-Key`` (the notification's key, or the key a deliberate re-send
was put under; the same for every retry and replay of one notification), so a receiver can drop
a repeat after a crash between its answer and the outbox's record of it.
"""

from __future__ import annotations

from typing import Any

import requests

from otel_audio.notify.channels.base import (
    ConfigReader,
    alert_status,
    ends_at,
    idempotency_key,
    post_json,
    rfc3339,
)
from otel_audio.processors.alerting.model import Notification

DEFAULT_EXTERNAL_URL = "http://127.0.0.1:8080"


def webhook_payload(notification: Notification, external_url: str, max_alerts: int = 0) -> dict[str, Any]:
    """Alertmanager's webhook message for ``notification``; ``max_alerts`` > 0 truncates the list."""
    alerts = list(notification.alerts)
    truncated = notification.truncated_alerts
    if max_alerts and len(alerts) > max_alerts:
        truncated += len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": truncated,
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": notification.common_labels,
        "commonAnnotations": notification.common_annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": alert_status(a),
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": ends_at(a),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


class WebhookChannel:
    """POSTs Alertmanager's webhook payload to ``url``.

    Args:
        name: the channel's name in the config.
        url: where to POST.
        headers: extra request headers (values may be ``env:NAME`` / ``file:/path`` secrets).
        bearer_token: sent as ``Authorization: Bearer ...``.
        external_url: the payload's ``externalURL`` (this receiver's address for people).
        max_alerts: at most this many alerts per message, the rest counted in truncatedAlerts (0: all).
        timeout_s: per request.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        bearer_token: str | None = None,
        external_url: str = DEFAULT_EXTERNAL_URL,
        max_alerts: int = 0,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        self.external_url = external_url
        self.max_alerts = max_alerts
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, notification: Notification) -> None:
        body = webhook_payload(notification, self.external_url, self.max_alerts)
        headers = {**self.headers, "Idempotency-Key": idempotency_key(notification)}
        post_json(self._session, self.url, body, headers=headers, timeout_s=self.timeout_s)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> WebhookChannel:
        read = ConfigReader(
            name, config, {"url", "headers", "bearer_token", "external_url", "max_alerts", "timeout"}
        )
        token = read.text("bearer_token", "", secret=True) if "bearer_token" in config else None
        return cls(
            name,
            read.url("url"),
            headers=read.str_map("headers", secret=True),
            bearer_token=token,
            external_url=read.text("external_url", DEFAULT_EXTERNAL_URL),
            max_alerts=read.integer("max_alerts", 0),
            timeout_s=read.seconds("timeout", 10.0),
        )
