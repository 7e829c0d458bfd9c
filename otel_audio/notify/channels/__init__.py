"""The channels notifications are delivered through, one module each, and the config factory.

=============  ==========================================================  ======================
type           sends                                                       module
=============  ==========================================================  ======================
webhook        Alertmanager's webhook payload (version 4) to any URL       ``webhook``
slack          a Slack incoming-webhook message (text + Block Kit)         ``slack``
pagerduty      PagerDuty Events API v2 trigger / acknowledge / resolve     ``pagerduty``
email          a multipart mail over SMTP with STARTTLS and AUTH           ``email``
alertmanager   alerts to an Alertmanager's ``POST /api/v2/alerts``         ``alertmanager``
=============  ==========================================================  ======================

Usage::

    channel = channel_from_config("oncall", {"type": "pagerduty", "routing_key": "env:PD_KEY"})
    channel.send(notification)  # returns, or raises DeliveryError(retryable=..., retry_after_s=...)

Normally the outbox (:mod:`otel_audio.notify.outbox`) calls ``send``, retrying as the error says.
Every channel's config also takes ``min_backoff`` and ``max_backoff``, the outbox's retry timing
for that channel (:mod:`otel_audio.notify.backoff`); the factory sets them as the channel's
``backoff`` attribute, which the outbox reads. Secrets in the config are given as ``env:NAME``
or ``file:/path``. ``docs/notifications.md`` has
the full reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otel_audio.notify.backoff import DEFAULT_BASE_S, DEFAULT_CAP_S, Backoff
from otel_audio.notify.channels.alertmanager import AlertmanagerChannel, postable_alerts
from otel_audio.notify.channels.base import Channel, ConfigReader, DeliveryError
from otel_audio.notify.channels.email import EmailChannel, email_message
from otel_audio.notify.channels.pagerduty import PagerDutyChannel, pagerduty_event
from otel_audio.notify.channels.slack import SlackChannel, slack_payload
from otel_audio.notify.channels.webhook import WebhookChannel, webhook_payload

CHANNEL_TYPES: dict[str, Any] = {
    "webhook": WebhookChannel,
    "slack": SlackChannel,
    "pagerduty": PagerDutyChannel,
    "email": EmailChannel,
    "alertmanager": AlertmanagerChannel,
}


def channel_from_config(name: str, config: Mapping[str, Any]) -> Channel:
    """Build the channel ``name`` from its config mapping; ValueError names the field that is wrong."""
    if not isinstance(config, Mapping):
        raise ValueError(f"channels.{name}: expected a mapping, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in CHANNEL_TYPES:
        raise ValueError(f"channels.{name}.type: expected one of {', '.join(CHANNEL_TYPES)}, got {kind!r}")
    channel = CHANNEL_TYPES[kind].from_config(name, dict(config))
    channel.backoff = _backoff(name, config)
    return channel


def _backoff(name: str, config: Mapping[str, Any]) -> Backoff | None:
    """The backoff a channel's config asks for (``min_backoff``, ``max_backoff``), or None for the
    outbox's default; ValueError names ``channels.<name>.<field>``."""
    if "min_backoff" not in config and "max_backoff" not in config:
        return None
    read = ConfigReader(name, config, set(config))
    base = read.seconds("min_backoff", DEFAULT_BASE_S)
    cap = read.seconds("max_backoff", max(DEFAULT_CAP_S, base))
    if base <= 0:
        got = config["min_backoff"]
        raise ValueError(f"{read.where('min_backoff')}: expected a duration above 0, got {got!r}")
    if cap < base:
        got = config["max_backoff"]
        where = read.where("max_backoff")
        raise ValueError(f"{where}: expected at least min_backoff ({base:g} s), got {got!r}")
    return Backoff(base_s=base, cap_s=cap)


__all__ = [
    "CHANNEL_TYPES",
    "AlertmanagerChannel",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "PagerDutyChannel",
    "SlackChannel",
    "WebhookChannel",
    "channel_from_config",
    "email_message",
    "pagerduty_event",
    "postable_alerts",
    "slack_payload",
    "webhook_payload",
]
