"""The ``aggregation`` processor's options: the receiver config's rules, validated into :class:`Rule`.

Kept apart from the windows (:mod:`otel_audio.processors.aggregation`) so the config's accepted
keys, defaults and error messages read in one place, and can be tested without a processor.
Every error names the option (``rules[0].slide``), what it accepts and the value it got.

Example::

    rules = parse_rules({"rules": [{"metric": "audio.latency", "window": "1m", "aggs": ["p99"]}]})
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from otel_audio.processors.units import duration_ns

WINDOW_ATTRIBUTE = "aggregation.window"
AGGS = ("avg", "min", "max", "count", "sum", "last", "rate", "increase")
PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")  # a percentile aggregation, p1 .. p99.9
_RULE_KEYS = ("metric", "window", "slide", "by", "aggs", "allowed_lateness")


@dataclass(frozen=True)
class Rule:
    """One aggregation: windows over the series of ``metric``.

    Args:
        metric: the metric whose series are aggregated.
        window_ns: window width.
        slide_ns: distance between window starts; equal to ``window_ns`` (tumbling) or a divisor.
        by: attributes kept (point, then resource attribute; ``service`` also the service name).
        aggs: aggregations, from :data:`AGGS` and percentiles ``pNN``.
        lateness_ns: how far behind the newest event time points are still accepted.
        window_label: the window as written in the options, the value of ``aggregation.window``.
    """

    metric: str
    window_ns: int
    slide_ns: int
    by: tuple[str, ...] = ()
    aggs: tuple[str, ...] = ("avg",)
    lateness_ns: int = 0
    window_label: str = ""


def parse_duration(value: Any, option: str) -> int:
    """Nanoseconds of a duration like ``"30s"``, ``"1m"``, ``"500ms"``, ``"1h"``."""
    try:
        return duration_ns(value if isinstance(value, str) else "", option)
    except ValueError:
        _require(False, option, value, "a duration like '500ms', '30s', '1m', '1h', '1d'")
        raise


def parse_rules(options: dict[str, Any] | None) -> list[Rule]:
    """The :class:`Rule` list of the receiver config's ``aggregation`` options.

    Keys: ``rules``, a non-empty list of maps with ``metric`` (required), ``window`` (default
    ``1m``), ``slide`` (default the window), ``by`` (default none), ``aggs`` (default ``[avg]``),
    ``allowed_lateness`` (default ``0s``).

    Raises:
        ValueError: naming the option that is wrong and what it accepts.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - {"rules"})
    _require(not unknown, unknown[0] if unknown else "", options, "only the key rules")
    rules = options.get("rules")
    _require(isinstance(rules, list) and len(rules) > 0, "rules", rules, "a non-empty list of rule maps")
    return [_rule(item, f"rules[{i}]") for i, item in enumerate(rules)]


def _rule(item: Any, where: str) -> Rule:
    _require(isinstance(item, dict), where, item, f"a map with the keys {', '.join(_RULE_KEYS)}")
    extra = sorted(set(item) - set(_RULE_KEYS))
    _require(
        not extra, f"{where}.{extra[0] if extra else ''}", item, f"only the keys {', '.join(_RULE_KEYS)}"
    )
    metric = item.get("metric")
    _require(isinstance(metric, str) and metric.strip() != "", f"{where}.metric", metric, "a metric name")
    window_label = item.get("window", "1m")
    window = parse_duration(window_label, f"{where}.window")
    _require(window > 0, f"{where}.window", window_label, "a positive duration")
    slide = parse_duration(item.get("slide", window_label), f"{where}.slide")
    _require(
        0 < slide <= window and window % slide == 0,
        f"{where}.slide",
        item.get("slide"),
        f"a positive duration dividing the window ({window_label})",
    )
    lateness = parse_duration(item.get("allowed_lateness", "0s"), f"{where}.allowed_lateness")
    by = item.get("by", [])
    ok = isinstance(by, list) and all(isinstance(b, str) and b for b in by) and len(set(by)) == len(by)
    _require(ok, f"{where}.by", by, "a list of distinct attribute names")
    _require(WINDOW_ATTRIBUTE not in by, f"{where}.by", by, f"names other than {WINDOW_ATTRIBUTE}")
    aggs = item.get("aggs", ["avg"])
    _require(isinstance(aggs, list) and len(aggs) > 0, f"{where}.aggs", aggs, "a non-empty list")
    for i, agg in enumerate(aggs):
        match = PERCENTILE.fullmatch(agg) if isinstance(agg, str) else None
        ok = agg in AGGS or (match is not None and 0 < float(match.group(1)) < 100)
        _require(ok, f"{where}.aggs[{i}]", agg, f"one of {', '.join(AGGS)} or a percentile p1..p99.9")
    return Rule(metric, window, slide, tuple(by), tuple(dict.fromkeys(aggs)), lateness, window_label)


def _require(ok: bool, option: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"aggregation option {option}: expected {accepted}, got {value!r}")
