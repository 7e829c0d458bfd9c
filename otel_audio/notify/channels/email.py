"""Email over SMTP: STARTTLS, AUTH, and a multipart/alternative message (plain text and HTML).

The message has ``From``, ``To``, ``Subject`` (a template), ``Date``, ``Message-ID`` and
``Auto-Submitted: auto-generated`` (RFC 3834, so autoresponders stay quiet). The Message-ID is
derived from the notification's key: a retry or a replay after a crash carries the same id, which
mail systems use to drop duplicates.

The subject template is ``str.format`` with ``{title}`` (``[FIRING:2] HighLatency``), ``{status}``,
``{receiver}``, ``{alertname}``, ``{count}`` and ``{group}`` (group labels as ``k=v``). A 4xx SMTP
reply or a network error is retried; a 5xx reply (bad credentials, rejected recipient) is final.
"""

from __future__ import annotations

import email.utils
import html
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from otel_audio.notify.channels.base import (
    ConfigReader,
    DeliveryError,
    alert_status,
    idempotency_key,
    rfc3339,
    title,
)
from otel_audio.processors.alerting.model import Notification

DEFAULT_SUBJECT = "{title}"


def email_message(
    notification: Notification,
    *,
    sender: str,
    to: list[str],
    subject: str = DEFAULT_SUBJECT,
    external_url: str = "",
) -> EmailMessage:
    """The message for ``notification``; raises ValueError for a subject template naming unknown fields."""
    fields = {
        "title": title(notification),
        "status": notification.status,
        "receiver": notification.receiver,
        "alertname": notification.common_labels.get("alertname", ""),
        "count": len(notification.alerts),
        "group": ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items())),
    }
    message = EmailMessage()
    message["Subject"] = subject.format(**fields)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = email.utils.formatdate(notification.created_at / 1e9, usegmt=True)
    domain = sender.rpartition("@")[2].strip("> ") or "otel-audio.invalid"
    message["Message-ID"] = f"<{idempotency_key(notification)}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Otel-Audio-Group-Key"] = notification.group_key.replace("\n", " ")
    message.set_content(_text(notification, fields["title"], external_url))
    message.add_alternative(_html(notification, fields["title"], external_url), subtype="html")
    return message


def _text(notification: Notification, head: str, external_url: str) -> str:
    lines = [head, ""]
    for alert in notification.alerts:
        lines.append(f"[{alert_status(alert)}] {alert.name} since {rfc3339(alert.starts_at)}")
        lines.extend(f"  {k} = {v}" for k, v in sorted(alert.labels.items()))
        lines.extend(f"  {k}: {v}" for k, v in sorted(alert.annotations.items()))
        if alert.generator_url:
            lines.append(f"  source: {alert.generator_url}")
        lines.append("")
    if external_url:
        lines.append(f"otel-audio: {external_url}")
    return "\n".join(lines) + "\n"


def _html(notification: Notification, head: str, external_url: str) -> str:
    esc = html.escape
    parts = [f"<html><body><h2>{esc(head)}</h2>"]
    for alert in notification.alerts:
        parts.append(f"<h3>[{esc(alert_status(alert))}] {esc(alert.name)}</h3><table>")
        rows = [*sorted(alert.labels.items()), *sorted(alert.annotations.items())]
        parts.extend(f"<tr><th align='left'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
        parts.append(f"<tr><th align='left'>since</th><td>{esc(rfc3339(alert.starts_at))}</td></tr></table>")
        if alert.generator_url:
            parts.append(f'<p><a href="{esc(alert.generator_url)}">source</a></p>')
    if external_url:
        parts.append(f'<p><a href="{esc(external_url)}">otel-audio</a></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


class EmailChannel:
    """Sends mail through an SMTP server.

    Args:
        name: the channel's name in the config.
        host, port: the SMTP server (submission is usually port 587 with STARTTLS).
        sender: the From address.
        to: recipients.
        starttls: upgrade with STARTTLS before AUTH (required when the server does not offer it).
        username, password: AUTH credentials (password as ``env:NAME`` in the config).
        ca_file: a CA bundle to verify the server with (default: the system's).
        subject: the subject template.
        external_url: linked from each message.
        timeout_s: per SMTP operation.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        sender: str,
        to: list[str],
        starttls: bool = True,
        username: str = "",
        password: str = "",
        ca_file: str | None = None,
        subject: str = DEFAULT_SUBJECT,
        external_url: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.to = list(to)
        self.starttls = starttls
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.subject = subject
        self.external_url = external_url
        self.timeout_s = timeout_s

    def send(self, notification: Notification) -> None:
        message = email_message(
            notification, sender=self.sender, to=self.to, subject=self.subject, external_url=self.external_url
        )
        where = f"smtp {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    if not smtp.has_extn("starttls"):
                        raise DeliveryError(f"{where}: server does not offer STARTTLS", retryable=False)
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPNotSupportedError as exc:  # e.g. AUTH configured, server offers none
            raise DeliveryError(f"{where}: {exc}", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            retry = all(400 <= code < 500 for code in codes)
            raise DeliveryError(f"{where}: recipients refused: {exc.recipients}", retryable=retry) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else exc.smtp_error
            )
            raise DeliveryError(f"{where}: {exc.smtp_code} {text}", retryable=exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> EmailChannel:
        known = {
            "host", "port", "from", "to", "starttls", "username", "password",
            "ca_file", "subject", "external_url", "timeout",
        }  # fmt: skip
        read = ConfigReader(name, config, known)
        subject = read.text("subject", DEFAULT_SUBJECT)
        try:
            subject.format(title="", status="", receiver="", alertname="", count=0, group="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{read.where('subject')}: bad template ({exc}); "
                "fields: {title} {status} {receiver} {alertname} {count} {group}"
            ) from None
        sender = read.text("from")
        if "@" not in sender:
            raise ValueError(f"{read.where('from')}: expected an email address, got {sender!r}")
        return cls(
            name,
            read.text("host"),
            read.integer("port", 587, low=1, high=65535),
            sender=sender,
            to=read.str_list("to"),
            starttls=read.flag("starttls", True),
            username=read.text("username", ""),
            password=read.text("password", "", secret=True) if "password" in config else "",
            ca_file=read.text("ca_file", "") or None,
            subject=subject,
            external_url=read.text("external_url", ""),
            timeout_s=read.seconds("timeout", 30.0),
        )
