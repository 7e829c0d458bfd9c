"""The values the alerting stages hand each other: alerts, label matchers, notifications.

The alerting pipeline runs in stages, each its own module, in the order data flows:

1. ``grammar`` parses a rule's condition; ``evaluate`` keeps the windows its selectors need and
   says, for a time, which label sets satisfy it (:class:`Sample`).
2. ``state`` runs each rule's alert instances through inactive -> pending -> firing -> resolved
   and yields :class:`Alert` values on every change.
3. ``dispatch`` (routing tree, grouping, inhibition, silences) turns alerts into
   :class:`Notification` values for named receivers, with Alertmanager's timing semantics.
4. ``otel_audio.notify`` puts each notification in a durable outbox and delivers it through the
   receiver's channels (webhook, Slack, PagerDuty, email, Alertmanager), with retries.
5. ``escalation`` and ``incidents`` follow a firing group over time.

Every time is an ``int`` of nanoseconds since the Unix epoch; no stage reads a clock of its own
(callers pass ``now``), so tests drive time.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

ALERTNAME = "alertname"
SEVERITY = "severity"


class AlertState(enum.Enum):
    """Prometheus's alert states; ``RESOLVED`` is an alert that fired and no longer does."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Sample:
    """One label set for which a condition holds, with the value it was decided on."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Alert:
    """One alert instance (a rule and a distinct label set) as it stands after a change.

    ``labels`` include ``alertname`` and ``severity``; ``ends_at`` is 0 while the alert fires and
    the resolution time once resolved. ``fingerprint`` identifies the instance across restarts
    (Alertmanager's notion: a hash of the sorted labels).
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    starts_at: int  # when it started firing (pending: when it became pending)
    ends_at: int = 0
    value: float = float("nan")
    generator_url: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def name(self) -> str:
        return self.labels.get(ALERTNAME, "")


@dataclass(frozen=True)
class LabelMatcher:
    """Alertmanager's matcher: ``name op "value"`` with ``=``, ``!=``, ``=~``, ``!~`` (full-match regex)."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"matcher {self.name}{self.op}{self.value!r}: op must be =, !=, =~ or !~")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}{self.op}{self.value!r}: bad regex: {exc}") from None

    def matches(self, labels: dict[str, str]) -> bool:
        """A missing label is the empty string, as in Alertmanager and PromQL."""
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit


def matches_all(matchers: tuple[LabelMatcher, ...] | list[LabelMatcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def parse_matcher(text: str) -> LabelMatcher:
    """``severity="critical"``, ``service=~"enh.*"``, ``env!=dev`` (quotes optional), as amtool reads them."""
    match = _MATCHER.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'matcher {text!r}: expected name, one of = != =~ !~, and a value, e.g. severity="critical"'
        )
    name, op, quoted, bare = match.groups()
    value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return LabelMatcher(name, op, value)


_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))')


@dataclass(frozen=True)
class Notification:
    """What a receiver (a channel name) is told about one alert group, at one moment.

    Mirrors Alertmanager's webhook payload: ``status`` is ``firing`` when any alert of the group
    fires, else ``resolved``; ``alerts`` hold the group's firing alerts and those resolved since
    the last notification. ``key`` identifies the notification for idempotent delivery (the
    same group, receiver and alert states give the same key).
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]
    status: str
    created_at: int
    truncated_alerts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. escalation level, incident id

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    @property
    def key(self) -> str:
        states = sorted(f"{a.fingerprint}:{a.state.value}:{a.starts_at}:{a.ends_at}" for a in self.alerts)
        digest = hashlib.sha256("\n".join([self.receiver, self.group_key, *states]).encode())
        return digest.hexdigest()[:32]


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit id of a label set (sorted name=value pairs, SHA-256)."""
    text = "\xff".join(f"{k}\xfe{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}
