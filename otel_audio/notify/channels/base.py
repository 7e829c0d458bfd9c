"""What every channel shares: the protocol, the error it raises, HTTP status rules, config reading.

A channel turns one :class:`~otel_audio.processors.alerting.model.Notification` into the request
its receiver documents and sends it. It raises :class:`DeliveryError` when the receiver did not
take it, saying whether trying again can help (``retryable``) and how long the receiver asked us
to wait (``retry_after_s``, from ``Retry-After``). The outbox decides when to try again.
"""

from __future__ import annotations

import email.utils
import re
import time
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import requests

from otel_audio.processors.alerting.model import Alert, AlertState, Notification
from otel_audio.receiver.config import resolve_secret

# Go's zero time.Time, which Alertmanager writes as endsAt while an alert fires.
ZERO_TIME = "0001-01-01T00:00:00Z"
USER_AGENT = "otel-audio-notify/1"
# Statuses worth a retry besides 5xx: 408 Request Timeout and 429 Too Many Requests.
_RETRYABLE_4XX = frozenset({408, 429})
# Fields every channel takes: its type, and the outbox's retry timing for it (notify/backoff.py).
COMMON_FIELDS = frozenset({"type", "min_backoff", "max_backoff"})


class DeliveryError(Exception):
    """The receiver did not take the notification.

    Args:
        message: what went wrong, for people (kept as the delivery's ``last_error``).
        retryable: whether the same request can succeed later (network errors, 408, 429, 5xx);
            ``False`` for a request the receiver will never accept (other 4xx, bad credentials).
        retry_after_s: the wait the receiver asked for (``Retry-After``), if any.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@runtime_checkable
class Channel(Protocol):
    """A configured destination. ``send`` either returns (delivered) or raises :class:`DeliveryError`."""

    name: str

    def send(self, notification: Notification) -> None: ...


def idempotency_key(notification: Notification) -> str:
    """The key a receiver can drop repeats by: ``extra["idempotency_key"]`` (set for deliberate
    re-sends, which must not look like duplicates) or else the notification's own key."""
    return str(notification.extra.get("idempotency_key") or notification.key)


def alert_status(alert: Alert) -> str:
    """Alertmanager's per-alert status: ``resolved`` once the alert ended, else ``firing``."""
    return "resolved" if alert.state is AlertState.RESOLVED else "firing"


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC, as Go marshals a time (trailing zeros cut)."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{rest:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def ends_at(alert: Alert) -> str:
    return rfc3339(alert.ends_at) if alert.ends_at else ZERO_TIME


def post_json(
    session: requests.Session,
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
    ok: tuple[int, ...] = (),
) -> requests.Response:
    """POST ``body`` as JSON; any 2xx (or a status in ``ok``) is success, else :class:`DeliveryError`."""
    sent = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        response = session.post(url, json=body, headers=sent, timeout=timeout_s)
    except requests.RequestException as exc:
        detail = scrub_url(str(exc), url)
        raise DeliveryError(
            f"POST {redact_url(url)}: {type(exc).__name__}: {detail}", retryable=True
        ) from None
    check_status(response, f"POST {redact_url(url)}", ok=ok)
    return response


def check_status(response: requests.Response, what: str, *, ok: tuple[int, ...] = ()) -> None:
    status = response.status_code
    if 200 <= status < 300 or status in ok:
        return
    retryable = status >= 500 or status in _RETRYABLE_4XX
    text = response.text[:300].strip()
    raise DeliveryError(
        f"{what}: HTTP {status}{': ' + text if text else ''}",
        retryable=retryable,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact_url(url: str) -> str:
    """A URL as it may be shown: scheme, host and port only. Webhook URLs carry their secret in
    the path (Slack, most incoming webhooks) or in ``user:password@``; neither is ever shown."""
    match = re.match(r"([a-z][a-z0-9+.-]*)://(?:[^/@?#]*@)?([^/?#]+)", url, re.IGNORECASE)
    return f"{match.group(1)}://{match.group(2)}/…" if match else "<url>"


def scrub_url(text: str, url: str) -> str:
    """``text`` (an error message from the HTTP stack) without ``url`` or any part of it that
    can hold a secret: urllib3 names the path (``url: /services/...``) and the host it tried."""
    parts = urllib.parse.urlsplit(url)
    secrets = [url, parts.path, parts.query, parts.password or "", parts.username or ""]
    if parts.path:
        secrets.append(parts.path + ("?" + parts.query if parts.query else ""))
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "/…" if secret.startswith("/") else "…")
    return text


class ConfigReader:
    """Reads one channel's config dict, naming ``channels.<name>.<field>`` in every error."""

    def __init__(self, name: str, config: Mapping[str, Any], known: set[str]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError(f"channels.{name}: expected a mapping, got {type(config).__name__}")
        self.name = name
        self.config = config
        known = set(known) | COMMON_FIELDS
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"channels.{name}.{unknown[0]}: unknown field; known fields: {', '.join(sorted(known))}"
            )

    def where(self, field: str) -> str:
        return f"channels.{self.name}.{field}"

    def text(self, field: str, default: str | None = None, *, secret: bool = False) -> str:
        value = self.config.get(field, default)
        if value is None:
            raise ValueError(f"{self.where(field)}: required")
        if not isinstance(value, str):
            raise ValueError(f"{self.where(field)}: expected a string, got {type(value).__name__}")
        return resolve_secret(value, self.where(field)) if secret else value

    def url(self, field: str, default: str | None = None) -> str:
        value = self.text(field, default, secret=True)
        if not re.match(r"https?://[^/\s]+", value):
            # the value is not echoed: it may be a secret (a webhook URL) with a typo in it
            raise ValueError(f"{self.where(field)}: expected an http:// or https:// URL")
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.config.get(field, default)
        if not isinstance(value, bool):
            raise ValueError(f"{self.where(field)}: expected true or false, got {value!r}")
        return value

    def integer(self, field: str, default: int, *, low: int = 0, high: int = 1 << 31) -> int:
        value = self.config.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{self.where(field)}: expected an integer from {low} to {high}, got {value!r}")
        return value

    def seconds(self, field: str, default: float) -> float:
        """A duration: a number of seconds or Prometheus notation (``30s``, ``5m``, ``2m30s``, ``1h``)."""
        value = self.config.get(field, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        if isinstance(value, str) and _DURATION.fullmatch(value) and value:
            units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
            return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value))
        raise ValueError(
            f"{self.where(field)}: expected seconds or a duration like 30s, 5m, 1h; got {value!r}"
        )

    def str_map(self, field: str, *, secret: bool = False) -> dict[str, str]:
        value = self.config.get(field, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{self.where(field)}: expected a mapping of names to strings")
        if secret:
            return {str(k): resolve_secret(v, f"{self.where(field)}.{k}") for k, v in value.items()}
        return {str(k): v for k, v in value.items()}

    def str_list(self, field: str) -> list[str]:
        value = self.config.get(field)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{self.where(field)}: expected a non-empty list of strings")
        return value


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def title(notification: Notification) -> str:
    """Alertmanager's default title: ``[FIRING:2] HighLatency enhancement`` / ``[RESOLVED] ...``."""
    firing = sum(1 for a in notification.alerts if alert_status(a) == "firing")
    status = f"FIRING:{firing}" if notification.status == "firing" else notification.status.upper()
    values = [notification.group_labels[k] for k in sorted(notification.group_labels)]
    if not values:
        values = [notification.common_labels.get("alertname", notification.receiver)]
    return f"[{status}] {' '.join(values)}"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
