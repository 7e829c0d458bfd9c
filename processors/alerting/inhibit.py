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
        sources = [
            a
            for a in firing_alerts
            if a.state is AlertState.FIRING and matches_all(self.source_matchers, a.labels)
        ]
        return self._inhibiting(dict(labels), sources)

    def _inhibiting(self, target: dict[str, str], sources: Iterable[Alert]) -> list[str]:
        """The sources (firing, matching the source side) that inhibit ``target`` under this rule."""
        if not matches_all(self.target_matchers, target):
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
        return self.index(firing_alerts).is_inhibited(alert_labels)

    def inhibited_by(self, alert_labels: Mapping[str, str], firing_alerts: Iterable[Alert]) -> list[str]:
        """Fingerprints of the alerts that inhibit these labels, under any rule, without repeats."""
        return self.index(firing_alerts).inhibited_by(alert_labels)

    def index(self, firing_alerts: Iterable[Alert] = ()) -> InhibitionIndex:
        """The rules with their firing source alerts sorted out, kept up to date by the caller."""
        index = InhibitionIndex(self.rules)
        for alert in firing_alerts:
            index.update(alert)
        return index


class InhibitionIndex:
    """Each rule with the firing alerts on its source side (Alertmanager's per-rule source cache),
    by their values of the rule's ``equal`` labels.

    Feed it every alert change with :meth:`update`; checking a target then looks only at the
    sources that agree with it on the ``equal`` labels.
    """

    def __init__(self, rules: Iterable[InhibitRule]) -> None:
        # rule -> equal-label values -> fingerprint -> source alert
        self._rules: list[tuple[InhibitRule, dict[tuple[str, ...], dict[str, Alert]]]] = [
            (rule, {}) for rule in rules
        ]

    def update(self, alert: Alert) -> None:
        """Take an alert's new state: a firing source is added, anything else removed."""
        fp = alert.fingerprint
        firing = alert.state is AlertState.FIRING
        for rule, by_equal in self._rules:
            key = _equal_values(rule, alert.labels)
            if firing and matches_all(rule.source_matchers, alert.labels):
                by_equal.setdefault(key, {})[fp] = alert
            elif key in by_equal:
                bucket = by_equal[key]
                bucket.pop(fp, None)
                if not bucket:
                    del by_equal[key]

    def is_inhibited(self, alert_labels: Mapping[str, str]) -> bool:
        return bool(self._find(alert_labels, first_only=True))

    def inhibited_by(self, alert_labels: Mapping[str, str]) -> list[str]:
        return self._find(alert_labels, first_only=False)

    def _find(self, alert_labels: Mapping[str, str], first_only: bool) -> list[str]:
        target = dict(alert_labels)
        seen: dict[str, None] = {}
        for rule, by_equal in self._rules:
            bucket = by_equal.get(_equal_values(rule, target)) if by_equal else None
            if bucket:
                for fp in rule._inhibiting(target, bucket.values()):
                    seen.setdefault(fp, None)
                    if first_only:
                        return [fp]
        return list(seen)


def _equal_values(rule: InhibitRule, labels: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in rule.equal)


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
