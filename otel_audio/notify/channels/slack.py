"""Slack incoming webhook: a message with ``text`` (the notification fallback) and Block Kit ``blocks``.

Slack documents an incoming webhook body as ``text`` plus optional ``blocks`` (or legacy
``attachments``); when blocks are present, ``text`` is what notifications and screen readers show.
The message is::

    {"text": "[FIRING:1] HighLatency",
     "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "[FIRING:1] HighLatency"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*firing* HighLatency ..."}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "receiver team-audio ..."}]}]}

``channel``, ``username`` and ``icon_emoji`` are added when configured (legacy webhooks honour them;
app webhooks post to the channel they were created for). Slack's limits are kept: header text
150 characters, section text 3000, at most 50 blocks. Slack answers 200 ``ok``; 400/403/404/410
(``invalid_payload``, ``action_prohibited``, ``channel_not_found``, ``channel_is_archived``) are
final, 429 carries ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import requests

from otel_audio.notify.channels.base import ConfigReader, alert_status, post_json, title, truncate
from otel_audio.processors.alerting.model import Notification

HEADER_MAX = 150
SECTION_MAX = 3000
ALERT_SECTIONS_MAX = 20  # of Slack's 50 blocks per message, leaving room for header and context


def slack_payload(
    notification: Notification,
    *,
    channel: str = "",
    username: str = "",
    icon_emoji: str = "",
    external_url: str = "",
) -> dict[str, Any]:
    """The incoming-webhook body for ``notification``."""
    head = title(notification)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(head, HEADER_MAX)}}
    ]
    shown = notification.alerts[:ALERT_SECTIONS_MAX]
    for alert in shown:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        lines = [f"*{alert_status(alert)}* {_escape(alert.name)}", f"`{_escape(labels)}`"]
        for key in ("summary", "description"):
            if alert.annotations.get(key):
                lines.append(_escape(alert.annotations[key]))
        links = [(alert.generator_url, "source"), (alert.annotations.get("runbook_url", ""), "runbook")]
        if any(url for url, _ in links):
            lines.append(" | ".join(f"<{url}|{text}>" for url, text in links if url))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate("\n".join(lines), SECTION_MAX)}}
        )
    more = len(notification.alerts) - len(shown) + notification.truncated_alerts
    context = f"receiver {notification.receiver}"
    if more:
        context += f" · {more} more alerts not shown"
    if external_url:
        context += f" · <{external_url}|otel-audio>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    payload: dict[str, Any] = {"text": head, "blocks": blocks}
    for key, value in (("channel", channel), ("username", username), ("icon_emoji", icon_emoji)):
        if value:
            payload[key] = value
    return payload


def _escape(text: str) -> str:
    """Slack's mrkdwn reserves ``&``, ``<`` and ``>`` (links, mentions); user text must not form them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel:
    """Posts to a Slack incoming webhook.

    Args:
        name: the channel's name in the config.
        webhook_url: the incoming webhook's URL (a secret: give it as ``env:NAME``).
        channel: ``#channel`` override (legacy webhooks only).
        username: bot name override (legacy webhooks only).
        icon_emoji: e.g. ``:rotating_light:``.
        external_url: linked from each message.
        timeout_s: per request.
    """

    def __init__(
        self,
        name: str,
        webhook_url: str,
        *,
        channel: str = "",
        username: str = "",
        icon_emoji: str = "",
        external_url: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.webhook_url = webhook_url
        self.channel = channel
        self.username = username
        self.icon_emoji = icon_emoji
        self.external_url = external_url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def send(self, notification: Notification) -> None:
        body = slack_payload(
            notification,
            channel=self.channel,
            username=self.username,
            icon_emoji=self.icon_emoji,
            external_url=self.external_url,
        )
        post_json(self._session, self.webhook_url, body, timeout_s=self.timeout_s)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> SlackChannel:
        read = ConfigReader(
            name, config, {"webhook_url", "channel", "username", "icon_emoji", "external_url", "timeout"}
        )
        return cls(
            name,
            read.url("webhook_url"),
            channel=read.text("channel", ""),
            username=read.text("username", ""),
            icon_emoji=read.text("icon_emoji", ""),
            external_url=read.text("external_url", ""),
            timeout_s=read.seconds("timeout", 10.0),
        )
