"""Alert rules as users write them: name, condition, timings, severity, labels, templated annotations.

Rules come from the receiver's YAML (the ``alerting`` processor's ``rules``) and from the API at
run time; both go through :func:`rule_from_dict`, which checks everything before a rule takes
effect: the condition parses (:mod:`otel_audio.processors.alerting.grammar`), durations read, the
templates use only what they may.

Annotations are templates in the Prometheus style, filled per alert instance: ``{{ $value }}``,
``{{ $labels.service }}`` (dotted names too: ``{{ $labels.error.type }}``, or
``{{ index $labels "error.type" }}``), ``{{ humanize $value }}`` (SI prefixes: 1.2k, 3.4M) and
``{{ printf "%.2f" $value }}``. Nothing else is expanded, and a template using anything else is
refused when the rule is created, so a template is never executed as code.

Example (YAML)::

    rules:
      - name: SlowEnhancement
        condition: p95(audio.stage.duration{audio.stage="enhancement"}, 5m) > 0.5
        for: 2m
        keep_firing_for: 5m
        severity: critical
        labels: {team: audio}
        annotations:
          summary: "enhancement p95 {{ humanize $value }}s on {{ $labels.service }}"
          runbook_url: https://runbooks.example/slow-enhancement
        channels: [slack, pagerduty]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from otel_audio.processors.alerting.model import ALERTNAME, SEVERITY
from otel_audio.processors.units import duration_ns

SEVERITIES = ("critical", "error", "warning", "info")
_KEYS = ("name", "condition", "for", "keep_firing_for", "severity", "labels", "annotations", "channels")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_EXPRESSIONS = (
    (re.compile(r"\s*\$value\s*"), "value"),
    (re.compile(r"\s*humanize\s+\$value\s*"), "humanize"),
    (re.compile(r'\s*printf\s+"(%[-+ #0]?\d*(?:\.\d+)?[dfeEgG%])"\s+\$value\s*'), "printf"),
    # OpenTelemetry attribute names have dots (error.type): $labels.error.type reads one, and Go's
    # index form, which Prometheus users write for names a dot path cannot spell, works too.
    (re.compile(r"\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*"), "label"),
    (re.compile(r'\s*index\s+\$labels\s+"([^"\\{}]{1,100})"\s*'), "label"),
)
MAX_TEMPLATE_CHARS = 4096


@dataclass(frozen=True)
class AlertRule:
    """One validated rule. ``condition`` keeps the text as written; ``parsed`` is its syntax tree."""

    name: str
    condition: str
    parsed: Any = field(compare=False, repr=False)
    for_ns: int = 0
    keep_firing_for_ns: int = 0
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    source: str = "config"  # "config" (read-only through the API) or "api"

    def instance_labels(self, sample_labels: dict[str, str]) -> dict[str, str]:
        """An alert's labels: the series', then the rule's, then alertname and severity (which win)."""
        return {**sample_labels, **self.labels, ALERTNAME: self.name, SEVERITY: self.severity}

    def render(self, labels: dict[str, str], value: float) -> dict[str, str]:
        """The annotations for one alert instance."""
        return {key: render(template, labels, value) for key, template in self.annotations.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "condition": self.condition,
            "for": _format_duration(self.for_ns),
            "keep_firing_for": _format_duration(self.keep_firing_for_ns),
            "severity": self.severity,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "channels": list(self.channels),
            "source": self.source,
        }


def rule_from_dict(item: Any, where: str = "rule", source: str = "config") -> AlertRule:
    """Validate one rule map (YAML or API JSON) into an :class:`AlertRule`.

    Raises:
        ValueError: naming the field (``rules[2].condition: line 1, column 9: ...``) and what
            it accepts; a condition error carries the grammar's line and column.
    """
    from otel_audio.processors.alerting.grammar import parse

    _require(isinstance(item, dict), where, item, f"a map with the keys {', '.join(_KEYS)}")
    extra = sorted(set(item) - set(_KEYS))
    _require(not extra, f"{where}.{extra[0] if extra else ''}", item, f"only the keys {', '.join(_KEYS)}")
    name = item.get("name")
    _require(isinstance(name, str) and _NAME.fullmatch(name) is not None, f"{where}.name", name,
             "a name of letters, digits, _ . : - (at most 200), starting with a letter or _")  # fmt: skip
    condition = item.get("condition")
    _require(isinstance(condition, str) and condition.strip() != "", f"{where}.condition", condition,
             "a condition, e.g. avg(audio.stage.duration, 5m) > 0.5")  # fmt: skip
    try:
        parsed = parse(condition)
    except ValueError as exc:
        raise ValueError(f"{where}.condition: {exc}") from None
    severity = item.get("severity", "warning")
    _require(severity in SEVERITIES, f"{where}.severity", severity, f"one of {', '.join(SEVERITIES)}")
    labels = _string_map(item.get("labels", {}), f"{where}.labels", label_names=True)
    annotations = _string_map(item.get("annotations", {}), f"{where}.annotations", label_names=False)
    for key, template in annotations.items():
        try:
            check_template(template)
        except ValueError as exc:
            raise ValueError(f"{where}.annotations.{key}: {exc}") from None
    channels = item.get("channels", [])
    ok = isinstance(channels, list) and all(isinstance(c, str) and c for c in channels)
    _require(ok, f"{where}.channels", channels, "a list of channel names")
    return AlertRule(
        name=name,
        condition=condition.strip(),
        parsed=parsed,
        for_ns=_duration(item.get("for", "0s"), f"{where}.for"),
        keep_firing_for_ns=_duration(item.get("keep_firing_for", "0s"), f"{where}.keep_firing_for"),
        severity=severity,
        labels=labels,
        annotations=annotations,
        channels=tuple(dict.fromkeys(channels)),
        source=source,
    )


# -- templates -------------------------------------------------------------------------------------


def check_template(template: str) -> None:
    """Refuse a template that uses anything but the documented expressions."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
    if template.count("{{") != template.count("}}"):
        raise ValueError("unbalanced {{ }} in template")
    for match in _TEMPLATE.finditer(template):
        if _expression(match.group(1)) is None:
            raise ValueError(
                f"unsupported template expression {{{{{match.group(1)}}}}}; use {{{{ $value }}}}, "
                '{{ humanize $value }}, {{ printf "%.2f" $value }}, {{ $labels.NAME }} '
                'or {{ index $labels "NAME" }}'
            )


def render(template: str, labels: dict[str, str], value: float) -> str:
    """Fill one checked template for an alert's labels and value."""

    def one(match: re.Match[str]) -> str:
        found = _expression(match.group(1))
        if found is None:
            return match.group(0)
        kind, arg = found
        if kind == "value":
            return _number(value)
        if kind == "humanize":
            return humanize(value)
        if kind == "printf":
            try:
                return arg % value
            except (TypeError, ValueError):
                return _number(value)
        return labels.get(arg, "")

    return _TEMPLATE.sub(one, template)


def humanize(value: float) -> str:
    """Prometheus's ``humanize``: SI prefixes, four significant digits (1234567 -> 1.235M)."""
    if not math.isfinite(value) or value == 0:
        return _number(value)
    prefixes = ((1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"),
                (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))  # fmt: skip
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.4g}{prefix}"
    return f"{value:.4g}"


def _expression(text: str) -> tuple[str, str] | None:
    for pattern, kind in _EXPRESSIONS:
        match = pattern.fullmatch(text)
        if match is not None:
            return kind, (match.group(1) if match.groups() else "")
    return None


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


# -- fields ----------------------------------------------------------------------------------------


def _string_map(value: Any, where: str, label_names: bool) -> dict[str, str]:
    _require(isinstance(value, dict), where, value, "a map of names to strings")
    for key, text in value.items():
        ok_key = isinstance(key, str) and (not label_names or _LABEL.fullmatch(key) is not None)
        _require(ok_key, f"{where}.{key}", key, "a label name of letters, digits, _ and .")
        _require(isinstance(text, str), f"{where}.{key}", text, "a string")
        _require(not label_names or key not in (ALERTNAME, SEVERITY), f"{where}.{key}", key,
                 "a label other than alertname and severity (the rule's name and severity)")  # fmt: skip
    return dict(value)


def _duration(value: Any, where: str) -> int:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        ns = duration_ns(str(value) if number else value if isinstance(value, str) else "", where)
    except ValueError:
        _require(False, where, value, "a duration like '30s', '5m', '1h'")
        raise
    _require(ns >= 0, where, value, "a duration of zero or more")
    return ns


def _format_duration(ns: int) -> str:
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6)):
        if ns and ns % size == 0:
            return f"{ns // size}{unit}"
    return "0s" if ns == 0 else f"{ns / 1e9}s"


def _require(ok: bool, option: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"{option}: expected {accepted}, got {value!r}")
