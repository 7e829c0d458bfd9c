"""PagerDuty Events API v2: ``POST /v2/enqueue`` with trigger, acknowledge and resolve events.

One alert group is one PagerDuty alert: ``dedup_key`` is the SHA-256 of the group key, the same
for every event of the group, so a resolve closes what the trigger opened and a repeated trigger
(a retry, a replay after a crash) updates the open alert instead of opening another. A trigger::

    {"routing_key": "...", "event_action": "trigger", "dedup_key": "<64 hex>",
     "payload": {"summary": "[FIRING:1] HighLatency", "source": "enhancer-1", "severity": "critical",
                 "timestamp": "2026-11-27T07:00:00Z", "component": "enhancement",
                 "group": "audio", "class": "HighLatency",
                 "custom_details": {"firing": "...", "resolved": "", "num_firing": 1, "num_resolved": 0}},
     "client": "otel-audio", "client_url": "http://127.0.0.1:8080",
     "links": [{"href": "...", "text": "source"}]}

Acknowledge and resolve carry only ``routing_key``, ``event_action`` and ``dedup_key``, as the API
asks. The event action is ``notification.extra["event_action"]`` when set (escalation sends
``acknowledge``), else ``resolve`` for a resolved group and ``trigger`` otherwise. PagerDuty
answers 202; 400 (invalid event) is final; 429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
from typing import Any

import requests

from otel_audio.notify.channels.base import ConfigReader, alert_status, post_json, rfc3339, title, truncate
from otel_audio.processors.alerting.model import Notification

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
# The alert's ``severity`` label -> PagerDuty severity; unknown labels get the channel's default.
DEFAULT_SEVERITY_MAP = {
    "critical": "critical",
    "page": "critical",
    "error": "error",
    "high": "error",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "none": "info",
}
SUMMARY_MAX = 1024


def dedup_key(notification: Notification) -> str:
    """Stable per alert group: every event of one group addresses the same PagerDuty alert."""
    return hashlib.sha256(notification.group_key.encode()).hexdigest()


def event_action(notification: Notification) -> str:
    wanted = notification.extra.get("event_action")
    if wanted in ("trigger", "acknowledge", "resolve"):
        return wanted
    return "resolve" if notification.status == "resolved" else "trigger"


def pagerduty_event(
    notification: Notification,
    routing_key: str,
    *,
    severity_map: dict[str, str] | None = None,
    default_severity: str = "error",
    source: str = "",
    client: str = "otel-audio",
    client_url: str = "",
) -> dict[str, Any]:
    """The Events API v2 body for ``notification``."""
    action = event_action(notification)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(notification),
    }
    if action != "trigger":
        return event
    common = notification.common_labels
    mapping = DEFAULT_SEVERITY_MAP if severity_map is None else severity_map
    firing = [a for a in notification.alerts if alert_status(a) == "firing"]
    resolved = [a for a in notification.alerts if alert_status(a) == "resolved"]
    payload: dict[str, Any] = {
        "summary": truncate(_summary(notification), SUMMARY_MAX),
        "source": source or common.get("instance") or common.get("service") or client,
        "severity": mapping.get(common.get("severity", ""), default_severity),
        "timestamp": rfc3339(
            min((a.starts_at for a in notification.alerts), default=notification.created_at)
        ),
        "custom_details": {
            "firing": _describe(firing),
            "resolved": _describe(resolved),
            "num_firing": len(firing),
            "num_resolved": len(resolved),
            "group_labels": dict(notification.group_labels),
            "receiver": notification.receiver,
        },
    }
    for field, label in (("component", "service"), ("group", "job"), ("class", "alertname")):
        if common.get(label):
            payload[field] = common[label]
    event["payload"] = payload
    if client:
        event["client"] = client
    if client_url:
        event["client_url"] = client_url
    links = []
    for alert in notification.alerts:
        for href, text in (
            (alert.generator_url, "source"),
            (alert.annotations.get("runbook_url", ""), "runbook"),
        ):
            if href and href not in {link["href"] for link in links}:
                links.append({"href": href, "text": f"{alert.name} {text}"})
    if links:
        event["links"] = links
    return event


def _summary(notification: Notification) -> str:
    text = title(notification)
    summary = notification.common_annotations.get("summary")
    return f"{text}: {summary}" if summary else text


def _describe(alerts: list[Any]) -> str:
    lines = []
    for alert in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        summary = alert.annotations.get("summary", "")
        lines.append(f"{labels}{' - ' + summary if summary else ''}")
    return "\n".join(lines)


class PagerDutyChannel:
    """Sends Events API v2 events.

    Args:
        name: the channel's name in the config.
        routing_key: the Events API v2 integration key (a secret: give it as ``env:NAME``).
        url: the enqueue endpoint.
        severity_map: alert ``severity`` label -> one of critical, error, warning, info.
        default_severity: for a label the map lacks.
        source: ``payload.source``; default the common ``instance`` or ``service`` label.
        client: ``client`` (the monitoring tool's name).
        client_url: ``client_url`` (where people see the alert).
        timeout_s: per request.
    """

    def __init__(
        self,
        name: str,
        routing_key: str,
        *,
        url: str = DEFAULT_URL,
        severity_map: dict[str, str] | None = None,
        default_severity: str = "error",
        source: str = "",
        client: str = "otel-audio",
        client_url: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.routing_key = routing_key
        self.url = url
        self.severity_map = dict(DEFAULT_SEVERITY_MAP if severity_map is None else severity_map)
        self.default_severity = default_severity
        self.source = source
        self.client = client
        self.client_url = client_url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, notification: Notification) -> None:
        body = pagerduty_event(
            notification,
            self.routing_key,
            severity_map=self.severity_map,
            default_severity=self.default_severity,
            source=self.source,
            client=self.client,
            client_url=self.client_url,
        )
        post_json(self._session, self.url, body, timeout_s=self.timeout_s)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> PagerDutyChannel:
        known = {
            "routing_key",
            "url",
            "severity_map",
            "severity",
            "source",
            "client",
            "client_url",
            "timeout",
        }
        read = ConfigReader(name, config, known)
        severity_map = {**DEFAULT_SEVERITY_MAP, **read.str_map("severity_map")}
        default = read.text("severity", "error")
        for label, value in [*severity_map.items(), ("", default)]:
            if value not in SEVERITIES:
                field = f"severity_map.{label}" if label else "severity"
                raise ValueError(
                    f"{read.where(field)}: expected one of {', '.join(SEVERITIES)}, got {value!r}"
                )
        return cls(
            name,
            read.text("routing_key", secret=True),
            url=read.url("url", DEFAULT_URL),
            severity_map=severity_map,
            default_severity=default,
            source=read.text("source", ""),
            client=read.text("client", "otel-audio"),
            client_url=read.text("client_url", ""),
            timeout_s=read.seconds("timeout", 10.0),
        )
