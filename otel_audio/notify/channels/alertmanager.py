"""Alertmanager API v2: ``POST /api/v2/alerts`` with a list of postable alerts.

For teams that already run Alertmanager: otel-audio plays Prometheus's part and Alertmanager does
the routing, grouping, silencing and fan-out (and HA deduplication across a cluster). The body is::

    [{"labels": {"alertname": "HighLatency", "severity": "critical", ...},
      "annotations": {"summary": "..."},
      "startsAt": "2026-11-27T07:00:00Z",
      "generatorURL": "http://127.0.0.1:8080/..."}]

A firing alert is posted without ``endsAt``: Alertmanager then resolves it by itself after its
``resolve_timeout`` (5m by default) unless it is posted again. Prometheus re-sends every firing
alert for that reason, and so does this channel: it has ``resend_interval_s`` (default 2m30s,
half the default ``resolve_timeout``; set it below half of yours), and the outbox re-sends the last
delivered firing notification of each group that often until the group's resolution is delivered.
A resolved alert is posted with its ``endsAt``, which resolves it in Alertmanager at once.
Re-sends go up to 64 groups to a request (``send_batch``), as Prometheus batches its alerts.

Give one channel per Alertmanager of a cluster, as Prometheus does; the cluster deduplicates.
"""

from __future__ import annotations

from typing import Any

import requests

from otel_audio.notify.channels.base import ConfigReader, alert_status, post_json, rfc3339
from otel_audio.processors.alerting.model import Notification

DEFAULT_RESEND_INTERVAL_S = 150.0


def postable_alerts(notification: Notification) -> list[dict[str, Any]]:
    """The API v2 ``postableAlerts`` body for ``notification``."""
    alerts = []
    for alert in notification.alerts:
        item: dict[str, Any] = {
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "startsAt": rfc3339(alert.starts_at),
        }
        if alert_status(alert) == "resolved" and alert.ends_at:
            item["endsAt"] = rfc3339(alert.ends_at)
        if alert.generator_url:
            item["generatorURL"] = alert.generator_url
        alerts.append(item)
    return alerts


class AlertmanagerChannel:
    """Posts alerts to one Alertmanager's API v2.

    Args:
        name: the channel's name in the config.
        url: the Alertmanager's base URL (``http://alertmanager:9093``); ``/api/v2/alerts`` is added.
        headers: extra request headers (for a proxy in front; values may be secrets).
        bearer_token: sent as ``Authorization: Bearer ...``.
        resend_interval_s: how often the outbox re-posts a firing group (0 disables re-sending).
        timeout_s: per request.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        bearer_token: str | None = None,
        resend_interval_s: float = DEFAULT_RESEND_INTERVAL_S,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.headers = dict(headers or {})
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        self.resend_interval_s = resend_interval_s
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, notification: Notification) -> None:
        self.send_batch([notification])

    def send_batch(self, notifications: list[Notification]) -> None:
        """Post the alerts of several notifications in one request (the outbox's re-sends)."""
        alerts = [alert for n in notifications for alert in postable_alerts(n)]
        post_json(self._session, self.url, alerts, headers=self.headers, timeout_s=self.timeout_s)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> AlertmanagerChannel:
        read = ConfigReader(name, config, {"url", "headers", "bearer_token", "resend_interval", "timeout"})
        token = read.text("bearer_token", "", secret=True) if "bearer_token" in config else None
        return cls(
            name,
            read.url("url"),
            headers=read.str_map("headers", secret=True),
            bearer_token=token,
            resend_interval_s=read.seconds("resend_interval", DEFAULT_RESEND_INTERVAL_S),
            timeout_s=read.seconds("timeout", 10.0),
        )
