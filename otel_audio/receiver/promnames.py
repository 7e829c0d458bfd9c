"""OpenTelemetry series as Prometheus samples, named as the OpenTelemetry↔Prometheus compatibility spec says.

Both ways otel-audio hands numbers to Prometheus use this module: the ``/metrics`` exposition
(``otel_audio.api.exposition``) and remote write (``otel_audio.receiver.remote_write``), so a
series has one Prometheus name whichever way it travels.

**Metric names** (the spec's "Metric Metadata", as the Collector's ``prometheus`` and
``prometheusremotewrite`` exporters apply it):

- characters outside ``[a-zA-Z0-9_:]`` become ``_``; runs of ``_`` collapse; a leading digit gets
  a ``_`` prefix: ``audio.derived.rtf`` -> ``audio_derived_rtf``;
- the unit (UCUM) is appended unless the name already holds its word: ``s`` -> ``_seconds``,
  ``ms`` -> ``_milliseconds``, ``By`` -> ``_bytes``, ``1/s`` -> ``_per_second``, ``{file}/min``
  -> ``_per_minute``; units in braces (``{file}``) are annotations and add nothing; ``1`` appends
  ``_ratio`` to gauges only; other units are appended with non-alphanumerics dropped;
- monotonic cumulative sums are counters and end in ``_total`` (moved to the end when the name
  holds it already); non-monotonic sums are gauges;
- explicit histograms become ``_bucket{le}`` (cumulative counts, ending with ``le="+Inf"``),
  ``_sum`` and ``_count``; exponential histograms, which the text format cannot carry, become a
  histogram with only the ``+Inf`` bucket (their exact buckets stay in the receiver's query API);
  summaries become ``{quantile}``, ``_sum`` and ``_count``;
- delta sums and delta histograms are left out (Prometheus needs cumulative values).

**Labels**: the resource's ``service.name`` (prefixed by ``service.namespace/`` when set) becomes
``job``, ``service.instance.id`` becomes ``instance``; point attributes become labels with
characters outside ``[a-zA-Z0-9_]`` replaced by ``_`` and ``key_`` before a leading digit; two
attributes mapping to one label have their values joined by ``;`` in sorted key order.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# The scopes of the series the processors emit (otel_audio.processors.*, and the slo stage's).
PROCESSOR_SCOPE = r"otel_audio\.(processors\..+|slo)"
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")

# UCUM units to Prometheus' words (the spec's table, as the Collector's translator has it).
UNIT_WORDS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
# The denominators of "x/y" units.
PER_WORDS = {
    "s": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


@dataclass(frozen=True)
class PromSeries:
    """How one stored series appears in Prometheus: family name and type, its labels, its help text."""

    family: str  # the name without type suffixes (_total, _bucket, _sum, _count)
    type: str  # "counter", "gauge", "histogram" or "summary"
    labels: tuple[tuple[str, str], ...]  # sorted by name; job and instance included
    help: str
    kind: str  # the OTLP type: gauge, sum, histogram, exponential_histogram, summary


def metric_name(name: str, unit: str, kind: str, monotonic: bool) -> tuple[str, str]:
    """(family name, Prometheus type) of an OpenTelemetry metric; see the module docstring."""
    if kind == "sum":
        prom_type = "counter" if monotonic else "gauge"
    elif kind in ("histogram", "exponential_histogram"):
        prom_type = "histogram"
    elif kind == "summary":
        prom_type = "summary"
    else:
        prom_type = "gauge"
    tokens = [t for t in _clean(name).split("_") if t]
    main, per = unit_words(unit, prom_type)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens += ["per", per]
    if prom_type == "counter":  # the type suffix goes on at the sample
        tokens = [t for t in tokens if t != "total"]
    family = "_".join(tokens) or "_"
    return ("_" + family if family[0].isdigit() else family), prom_type


def unit_words(unit: str, prom_type: str) -> tuple[str, str]:
    """(unit word, per-unit word) a unit adds to a name: ``("seconds", "")``, ``("", "second")``
    for ``1/s``, ``("ratio", "")`` for a gauge of unit ``1``; braces (``{file}``) add nothing."""
    unit = re.sub(r"\{[^}]*\}", "", unit or "").strip()
    if unit == "1":
        return ("ratio" if prom_type == "gauge" else ""), ""
    top, _, bottom = unit.partition("/")
    main = "" if top in ("", "1") else _unit_word(top)
    per = PER_WORDS.get(bottom, _clean_word(bottom)) if bottom else ""
    return main, per


def label_name(key: str) -> str:
    """A Prometheus label name for an attribute key."""
    name = _INVALID_LABEL.sub("_", key)
    if name and name[0].isdigit():
        name = "key_" + name
    return name or "key_"


@functools.lru_cache(maxsize=65536)
def describe(
    metric: str, unit: str, kind: str, monotonic: bool, description: str, resource: str, attributes: str
) -> PromSeries:
    """The Prometheus view of a series (its ``SERIES_SCHEMA`` fields); cached, series repeat."""
    family, prom_type = metric_name(metric, unit, kind, monotonic)
    res = _loads(resource)
    merged: dict[str, list[tuple[str, str]]] = {}
    for key, value in _loads(attributes).items():
        merged.setdefault(label_name(key), []).append((key, _text(value)))
    labels = {name: ";".join(v for _, v in sorted(pairs)) for name, pairs in merged.items()}
    service = _text(res.get("service.name", ""))
    if res.get("service.namespace"):
        service = f"{_text(res['service.namespace'])}/{service}"
    if service:
        labels["job"] = service
    if res.get("service.instance.id"):
        labels["instance"] = _text(res["service.instance.id"])
    labels.pop("__name__", None)
    return PromSeries(family, prom_type, tuple(sorted(labels.items())), description or metric, kind)


def describe_row(row: Mapping[str, Any]) -> PromSeries:
    """:func:`describe` of a ``SERIES_SCHEMA`` row."""
    return describe(
        row["metric"],
        row["unit"] or "",
        row["type"],
        bool(row["monotonic"]),
        row["description"] or "",
        row["resource"] or "{}",
        row["attributes"] or "{}",
    )


def samples(series: PromSeries, point: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of one ``POINTS_SCHEMA`` row of the series."""
    labels = dict(series.labels)
    if series.type == "counter":
        yield f"{series.family}_total", labels, float(point["value"])
    elif series.type == "gauge":
        yield series.family, labels, float(point["value"])
    elif series.type == "histogram":
        bounds = point.get("bounds") or [] if series.kind == "histogram" else []
        counts = point.get("bucket_counts") or [] if series.kind == "histogram" else []
        total = 0
        for bound, count in zip(bounds, counts, strict=False):
            total += int(count)
            yield f"{series.family}_bucket", {**labels, "le": _le(bound)}, float(total)
        count = int(point.get("count") or 0)
        yield f"{series.family}_bucket", {**labels, "le": "+Inf"}, float(count)
        yield f"{series.family}_sum", labels, float(point.get("value") or 0.0)
        yield f"{series.family}_count", labels, float(count)
    else:  # summary
        for q, v in zip(point.get("quantiles") or [], point.get("quantile_values") or [], strict=False):
            yield series.family, {**labels, "quantile": _le(q)}, float(v)
        yield f"{series.family}_sum", labels, float(point.get("value") or 0.0)
        yield f"{series.family}_count", labels, float(point.get("count") or 0)


def exportable(kind: str, temporality: str) -> bool:
    """Whether Prometheus can take the series: delta sums and histograms it cannot."""
    return not (kind in ("sum", "histogram", "exponential_histogram") and temporality == "delta")


def _le(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return repr(float(bound))


def _clean(name: str) -> str:
    name = _UNDERSCORES.sub("_", _INVALID_NAME.sub("_", name)).strip("_")
    if not name:
        return "_"
    return "_" + name if name[0].isdigit() else name


def _clean_word(word: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "", word)


def _unit_word(unit: str) -> str:
    return UNIT_WORDS.get(unit, _clean_word(unit))


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
