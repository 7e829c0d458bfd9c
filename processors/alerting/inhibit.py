"""Inhibition: a firing alert mutes other alerts, e.g. a critical one the warnings of its service.

An :class:`InhibitRule` says: while an alert matching ``source_matchers`` fires, alerts matching
``target_matchers`` are not notified, provided the two agree on every label named in ``equal``
(a label missing on both sides counts as equal, as does missing and empty). The usual rule::

    inhibit_rules_from_config([{
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["service"],
    }])

Semantics are Alertmanager's (``inhibit/inhibit.go``): only firing source alerts inhibit; an
alert that matches both sides of a rule is not inhibited by alerts that also match both sides
(so it never inhibits itself, and two such alerts do not mute each other); a source alert inhibits
even when it is itself silenced or inhibited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from otel_audio.processors.alerting.model import Alert, AlertState, LabelMatcher, matches_all
from otel_audio.processors.alerting.routing import matchers_from_config

_RULE_KEYS = frozenset({"source_matchers", "target_matchers", "equal"})


@dataclass(frozen=True)
class InhibitRule:
    """Alerts matching ``target_matchers`` are muted while one matching ``source_matchers`` fires.

    Args:
        source_matchers: what an inhibiting alert looks like.
        target_matchers: what an inhibited alert looks like.
        equal: label names whose values must be the same on source and target.
    """

    source_matchers: tuple[LabelMatcher, ...]
    target_matchers: tuple[LabelMatcher, ...]
    equal: tuple[str, ...] = ()

    def sources(self, labels: Mapping[str, str], firing_alerts: Iterable[Alert]) -> list[str]:
        """Fingerprints of the firing alerts that inhibit an alert with ``labels`` under this rule."""
        return self._inhibiting(dict(labels), self._source_alerts(firing_alerts))

    def _source_alerts(self, alerts: Iterable[Alert]) -> list[Alert]:
        """The firing alerts on this rule's source side (Alertmanager's per-rule source cache)."""
        return [
            a for a in alerts if a.state is AlertState.FIRING and matches_all(self.source_matchers, a.labels)
        ]

    def _inhibiting(self, target: dict[str, str], sources: list[Alert]) -> list[str]:
        if not sources or not matches_all(self.target_matchers, target):
            return []
        both_sides = matches_all(self.source_matchers, target)
        found = []
        for alert in sources:
            if any(alert.labels.get(name, "") != target.get(name, "") for name in self.equal):
                continue
            if both_sides and matches_all(self.target_matchers, alert.labels):
                continue
            found.append(alert.fingerprint)
        return found


class Inhibitor:
    """Applies a list of :class:`InhibitRule` to alerts against the alerts currently firing.

    Args:
        rules: the rules; an alert is inhibited when any rule inhibits it.
    """

    def __init__(self, rules: Iterable[InhibitRule] = ()) -> None:
        self.rules = tuple(rules)

    def is_inhibited(self, alert_labels: Mapping[str, str], firing_alerts: Iterable[Alert]) -> bool:
        """Whether a firing alert (``firing_alerts``; others are ignored) mutes these labels."""
        return self.snapshot(firing_alerts).is_inhibited(alert_labels)

    def inhibited_by(self, alert_labels: Mapping[str, str], firing_alerts: Iterable[Alert]) -> list[str]:
        """Fingerprints of the alerts that inhibit these labels, under any rule, without repeats."""
        return self.snapshot(firing_alerts).inhibited_by(alert_labels)

    def snapshot(self, firing_alerts: Iterable[Alert]) -> InhibitionSnapshot:
        """The rules applied to one set of alerts, for checking many targets against it cheaply."""
        alerts = list(firing_alerts) if self.rules else []
        return InhibitionSnapshot([(rule, rule._source_alerts(alerts)) for rule in self.rules])


class InhibitionSnapshot:
    """Each rule with its firing source alerts, sorted out once (see :meth:`Inhibitor.snapshot`)."""

    def __init__(self, rules: list[tuple[InhibitRule, list[Alert]]]) -> None:
        self._rules = [(rule, sources) for rule, sources in rules if sources]

    def is_inhibited(self, alert_labels: Mapping[str, str]) -> bool:
        if not self._rules:
            return False
        target = dict(alert_labels)
        return any(rule._inhibiting(target, sources) for rule, sources in self._rules)

    def inhibited_by(self, alert_labels: Mapping[str, str]) -> list[str]:
        target = dict(alert_labels)
        seen: dict[str, None] = {}
        for rule, sources in self._rules:
            for fp in rule._inhibiting(target, sources):
                seen.setdefault(fp, None)
        return list(seen)


def inhibit_rules_from_config(config: list[Mapping[str, Any]] | None) -> list[InhibitRule]:
    """Rules from the ``inhibit_rules:`` list: ``source_matchers``, ``target_matchers``, ``equal``.

    Raises:
        ValueError: naming the path of the bad field (``inhibit_rules[0].target_matchers[1]: ...``).
    """
    if config is None:
        return []
    if not isinstance(config, list):
        raise ValueError(f"inhibit_rules: expected a list of rules, got {type(config).__name__}")
    rules = []
    for i, item in enumerate(config):
        path = f"inhibit_rules[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(item).__name__}")
        unknown = sorted(set(item) - _RULE_KEYS)
        if unknown:
            hint = (
                "; use source_matchers / target_matchers"
                if unknown[0].endswith(("match", "match_re"))
                else ""
            )
            raise ValueError(
                f"{path}.{unknown[0]}: unknown field; accepted: {', '.join(sorted(_RULE_KEYS))}{hint}"
            )
        source = matchers_from_config(item.get("source_matchers"), f"{path}.source_matchers")
        target = matchers_from_config(item.get("target_matchers"), f"{path}.target_matchers")
        if not source:
            raise ValueError(f"{path}.source_matchers: at least one matcher is needed")
        if not target:
            raise ValueError(f"{path}.target_matchers: at least one matcher is needed")
        equal = item.get("equal") or []
        if not isinstance(equal, list) or not all(isinstance(n, str) and n for n in equal):
            raise ValueError(f"{path}.equal: expected a list of label names, got {equal!r}")
        rules.append(InhibitRule(source, target, tuple(equal)))
    return rules
