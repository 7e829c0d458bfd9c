"""Span metrics: request rate, errors and duration (RED) derived from spans, weighted for sampling.

:class:`SpanMetrics` is a stage of the receiver's processor chain. For every span it receives,
from any language, it adds to two series keyed by the span's *dimensions*:

- ``traces.span.metrics.calls``: a monotonic cumulative sum, the estimated number of calls;
- ``traces.span.metrics.duration``: a cumulative explicit-bucket histogram of the span's
  duration in seconds, with exemplars (trace and span ids of recent spans).

Names and dimensions follow the OpenTelemetry Collector's ``spanmetrics`` connector, so
dashboards and alert rules written for it work here: ``service.name``, ``span.name``,
``span.kind`` (``SPAN_KIND_SERVER`` ...), ``status.code`` (``STATUS_CODE_UNSET``,
``STATUS_CODE_OK``, ``STATUS_CODE_ERROR``), plus ``audio.stage`` when the span has it, plus the
configured extra dimensions (span attribute first, then resource attribute, then the
dimension's default; omitted when none applies). Errors are not a separate metric: they are
the calls with ``status.code="STATUS_CODE_ERROR"``, and the error ratio is their share.

**Weighting.** Each span counts with its *adjusted count*, the number of spans it stands for:

- ``2**56 / (2**56 - T)`` when its tracestate has ``ot=th:T`` (OpenTelemetry's consistent
  probability sampling, ``p = 1 - T/2**56``);
- else ``1/p`` for a ``sampling.probability`` attribute ``p`` in ``(0, 1]``;
- else 1.

Spans kept by tail promotion are not part of the probability sample and count 0 (the rule in
:mod:`otel_audio.samplers.tail`): those marked ``sampling.promoted=true``, and those whose
randomness ``R`` (``rv``, else the trace id's lower 56 bits) is below their own threshold ``T``,
which no probability sampler would have kept. They still create their series and serve as
exemplars (marked ``sampling.promoted``), since they are the spans worth looking at. Summing
adjusted counts of the remaining spans estimates the unsampled totals without bias.

**Non-integer weights.** Calls and the histogram's sum are kept and emitted as floats (the
points' ``value`` column), so they are exact. Histogram bucket counts are integers on the wire;
each bucket keeps its cumulative *float* weight and emits ``round(weight)``. Because the
points are cumulative, the rounding error never accumulates: every emitted bucket is within
0.5 of its unbiased estimate at every flush, and stays monotonic. ``count`` is the sum of the
emitted buckets, so a point is always self-consistent.

Points are emitted on ``tick(now)`` once ``flush_interval_s`` has passed since the last flush,
for every series, through the ``emit`` callback the chain binds (so the store and later stages
see them). A series' start time is fixed when it is first seen. At most ``max_series``
dimension sets are tracked; spans beyond go to one overflow series
(``otel.metric.overflow="true"``, as the Collector does), counted in ``overflow_spans`` and
logged once, so totals stay right.

Example::

    spanmetrics = from_options({"dimensions": ["audio.pipeline"], "flush_interval_s": 10})
    spanmetrics.bind_emit(store.process)
    spanmetrics.process(span_batch)
    spanmetrics.tick(now_unix_nano)
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    MetricType,
    SpanBatch,
    Temporality,
    canonical_json,
    series_id,
)
from otel_audio.samplers import consistent
from otel_audio.semconv import AUDIO_STAGE, SAMPLING_PROBABILITY, SAMPLING_PROMOTED
from otel_audio.version import __version__

_log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "traces.span.metrics"
DEFAULT_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Seconds: 5 ms (loading a short file) up to 5 min (enhancing a long recording)."""
DEFAULT_FLUSH_INTERVAL_S = 10.0
DEFAULT_MAX_SERIES = 10_000
DEFAULT_EXEMPLARS_PER_SERIES = 5
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"

SPAN_KINDS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
              "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")  # fmt: skip
STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
_BUILTIN_DIMENSIONS = ("service.name", "span.name", "span.kind", "status.code", AUDIO_STAGE)

_SCOPE_NAME = "otel_audio.processors.spanmetrics"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME, "version": __version__})
_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m)")
_HEX = re.compile(r"[0-9a-f]{32}")
_RV = re.compile(r"[0-9a-f]{14}")
_COLUMNS = ("trace_id", "span_id", "trace_state", "name", "kind", "end_time_unix_nano", "duration_ns",
            "status_code", "service", "resource", "attributes")  # fmt: skip


@dataclass(frozen=True)
class Dimension:
    """An extra dimension: a span or resource attribute, with a value to use when both lack it."""

    name: str
    default: str | None = None


class _Series:
    """One dimension set: its two series ids and cumulative state."""

    __slots__ = ("attributes", "buckets", "calls", "calls_id", "duration_id", "exemplars", "resource",
                 "service", "start_ns", "sum_s")  # fmt: skip

    def __init__(self, service: str, attributes: str, start_ns: int, n_buckets: int, exemplars: int):
        self.service = service
        self.resource = canonical_json({"service.name": service})
        self.attributes = attributes
        self.calls_id = 0
        self.duration_id = 0
        self.start_ns = start_ns
        self.calls = 0.0
        self.sum_s = 0.0
        self.buckets = [0.0] * n_buckets
        self.exemplars: deque[dict[str, Any]] = deque(maxlen=exemplars)


class SpanMetrics:
    """Processor deriving weighted RED metrics from spans (see the module docstring).

    Args:
        dimensions: Extra dimensions beyond the built-in ones.
        bounds: Upper bounds of the duration buckets, in seconds, strictly increasing.
        flush_interval_s: Emit all series on the first tick at least this long after the last flush.
        max_series: Most dimension sets tracked; further ones share the overflow series.
        exemplars_per_series: Most exemplars kept per series between two flushes (0: none).
        namespace: Prefix of the metric names.
    """

    name = "spanmetrics"

    def __init__(
        self,
        dimensions: Sequence[Dimension] = (),
        bounds: Sequence[float] = DEFAULT_BOUNDS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_series: int = DEFAULT_MAX_SERIES,
        exemplars_per_series: int = DEFAULT_EXEMPLARS_PER_SERIES,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self.dimensions = tuple(dimensions)
        self.bounds = tuple(float(b) for b in bounds)
        self.flush_interval_ns = int(flush_interval_s * 1e9)
        self.max_series = max_series
        self.exemplars_per_series = exemplars_per_series
        self.calls_metric = f"{namespace}.calls"
        self.duration_metric = f"{namespace}.duration"
        self.overflow_spans = 0
        """Spans counted in the overflow series because ``max_series`` was reached."""
        self._series: dict[tuple, _Series] = {}
        self._overflow: _Series | None = None
        self._emit: Callable[[Batch], None] | None = None
        self._last_tick_ns: int | None = None
        self._last_flush_ns: int | None = None
        self._dirty = False
        self._resource_cache: dict[str, dict[str, Any]] = {}

    # --- Processor protocol ----------------------------------------------------------------

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """The chain hands over how to pass new series to the processors after this one."""
        self._emit = emit

    def process(self, batch: Batch) -> None:
        """Add every span of a span batch to its series; other batches pass by untouched."""
        if not isinstance(batch, SpanBatch) or batch.spans.num_rows == 0:
            return
        cols = {name: batch.spans.column(name).to_pylist() for name in _COLUMNS}
        resource_dims = bool(self.dimensions)
        for i in range(batch.spans.num_rows):
            attrs = _loads(cols["attributes"][i])
            resource = self._resource(cols["resource"][i]) if resource_dims else {}
            weight, promoted = adjusted_count(cols["trace_state"][i], cols["trace_id"][i], attrs)
            end_ns = cols["end_time_unix_nano"][i] or 0
            key = self._key(cols, i, attrs, resource)
            series = self._lookup(key, cols["service"][i] or "", end_ns)
            seconds = max(cols["duration_ns"][i] or 0, 0) / 1e9
            if weight:
                series.calls += weight
                series.sum_s += weight * seconds
                series.buckets[bisect.bisect_left(self.bounds, seconds)] += weight
            if series.exemplars.maxlen:
                series.exemplars.append(
                    {
                        "time_unix_nano": end_ns,
                        "value": seconds,
                        "trace_id": cols["trace_id"][i] or "",
                        "span_id": cols["span_id"][i] or "",
                        "attributes": canonical_json({SAMPLING_PROMOTED: True} if promoted else {}),
                    }
                )
            self._dirty = True

    def tick(self, now_unix_nano: int) -> None:
        """Emit every series once ``flush_interval_s`` has passed since the last flush."""
        self._last_tick_ns = now_unix_nano
        due = self._last_flush_ns is None or now_unix_nano - self._last_flush_ns >= self.flush_interval_ns
        if not due:
            return
        self._last_flush_ns = now_unix_nano
        if self._emit is not None and (self._series or self._overflow):
            self._emit(self.collect(now_unix_nano))

    def close(self) -> None:
        """Emit what arrived since the last flush, stamped just after the last tick."""
        if self._dirty and self._emit is not None and self._last_tick_ns is not None:
            self._emit(self.collect(max(self._last_tick_ns, self._last_flush_ns or 0) + 1))

    # --- Output ------------------------------------------------------------------------------

    def collect(self, now_unix_nano: int) -> MetricBatch:
        """All series as cumulative points at ``now``, with the exemplars gathered since the last call."""
        series_rows: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        exemplars: list[dict[str, Any]] = []
        everything = list(self._series.values()) + ([self._overflow] if self._overflow else [])
        for s in everything:
            if s.start_ns >= now_unix_nano:  # a sender's clock ahead of ours; fixed from now on
                s.start_ns = now_unix_nano - 1
            series_rows.append(self._series_row(s, s.calls_id, self.calls_metric, MetricType.SUM))
            series_rows.append(self._series_row(s, s.duration_id, self.duration_metric, MetricType.HISTOGRAM))
            base = {"time_unix_nano": now_unix_nano, "start_time_unix_nano": s.start_ns, "flags": 0}
            points.append({**base, "series_id": s.calls_id, "value": s.calls})
            counts = [math.floor(w + 0.5) for w in s.buckets]
            points.append(
                {
                    **base,
                    "series_id": s.duration_id,
                    "value": s.sum_s,
                    "count": sum(counts),
                    "bounds": list(self.bounds),
                    "bucket_counts": counts,
                }
            )
            exemplars.extend({**e, "series_id": s.duration_id} for e in s.exemplars)
            s.exemplars.clear()
        self._dirty = False
        return MetricBatch(
            points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
            series=pa.Table.from_pylist(series_rows, schema=SERIES_SCHEMA),
            exemplars=pa.Table.from_pylist(exemplars, schema=EXEMPLARS_SCHEMA),
        )

    @property
    def series_count(self) -> int:
        """Dimension sets tracked (the overflow series not included)."""
        return len(self._series)

    # --- Internals ---------------------------------------------------------------------------

    def _key(self, cols: dict[str, list], i: int, attrs: dict[str, Any], resource: dict[str, Any]) -> tuple:
        kind, status = cols["kind"][i] or 0, cols["status_code"][i] or 0
        extra = []
        for d in self.dimensions:
            value = attrs.get(d.name, resource.get(d.name, d.default))
            extra.append(None if value is None else _label(value))
        stage = attrs.get(AUDIO_STAGE)
        return (
            cols["service"][i] or "",
            cols["name"][i] or "",
            SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else str(kind),
            STATUS_CODES[status] if 0 <= status < len(STATUS_CODES) else str(status),
            None if stage is None else _label(stage),
            *extra,
        )

    def _lookup(self, key: tuple, service: str, seen_ns: int) -> _Series:
        series = self._series.get(key)
        if series is not None:
            return series
        start = self._last_tick_ns if self._last_tick_ns is not None else seen_ns
        if len(self._series) >= self.max_series:
            self.overflow_spans += 1
            if self._overflow is None:
                _log.warning(
                    "spanmetrics tracks max_series=%d dimension sets; further spans are counted in "
                    "one series with %s=true",
                    self.max_series,
                    OVERFLOW_ATTRIBUTE,
                )
                self._overflow = self._new_series("", {OVERFLOW_ATTRIBUTE: "true"}, start)
            return self._overflow
        names = _BUILTIN_DIMENSIONS + tuple(d.name for d in self.dimensions)
        attributes = {name: value for name, value in zip(names, key, strict=True) if value is not None}
        series = self._series[key] = self._new_series(service, attributes, start)
        return series

    def _new_series(self, service: str, attributes: dict[str, str], start_ns: int) -> _Series:
        s = _Series(
            service, canonical_json(attributes), start_ns, len(self.bounds) + 1, self.exemplars_per_series
        )
        s.calls_id = series_id(self.calls_metric, s.resource, _SCOPE, s.attributes)
        s.duration_id = series_id(self.duration_metric, s.resource, _SCOPE, s.attributes)
        return s

    def _series_row(self, s: _Series, sid: int, metric: str, kind: MetricType) -> dict[str, Any]:
        calls = kind is MetricType.SUM
        return {
            "series_id": sid,
            "metric": metric,
            "type": kind.value,
            "unit": "{call}" if calls else "s",
            "description": "Calls (spans), weighted by adjusted count." if calls else "Span durations.",
            "temporality": Temporality.CUMULATIVE.value,
            "monotonic": True,
            "service": s.service,
            "resource": s.resource,
            "scope": _SCOPE_NAME,
            "scope_version": __version__,
            "attributes": s.attributes,
        }

    def _resource(self, text: str | None) -> dict[str, Any]:
        cached = self._resource_cache.get(text or "")
        if cached is None:
            if len(self._resource_cache) >= 4096:
                self._resource_cache.clear()
            cached = self._resource_cache[text or ""] = _loads(text)
        return cached


# --- Weighting -----------------------------------------------------------------------------------


def adjusted_count(
    trace_state: str | None, trace_id: str | None, attributes: dict[str, Any]
) -> tuple[float, bool]:
    """Return ``(adjusted count, promoted)`` of one span; promoted spans have adjusted count 0.

    Args:
        trace_state: The W3C tracestate header value (``ot=th:c;rv:...,vendor=x``).
        trace_id: 32 lower-case hex characters.
        attributes: The span's attributes.
    """
    promoted = attributes.get(SAMPLING_PROMOTED) in (True, "true")
    threshold, rv = _ot(trace_state or "")
    if threshold is not None:
        if rv is None and trace_id and _HEX.fullmatch(trace_id):
            rv = int(trace_id[-14:], 16)
        if rv is not None and rv < threshold:
            promoted = True
        weight = consistent.threshold_to_adjusted_count(threshold)
    else:
        p = attributes.get(SAMPLING_PROBABILITY)
        ok = isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1
        weight = 1.0 / p if ok else 1.0
    return (0.0, True) if promoted else (weight, False)


@functools.lru_cache(maxsize=4096)
def _ot(trace_state: str) -> tuple[int | None, int | None]:
    """Threshold and explicit randomness from a tracestate header; ``None`` when absent or malformed."""
    for member in trace_state.split(","):
        key, sep, value = member.strip().partition("=")
        if sep and key == consistent.OT_KEY:
            fields: dict[str, str] = {}
            for sub in value.split(";"):
                k, colon, v = sub.partition(":")
                if colon:
                    fields.setdefault(k, v)
            try:
                threshold = consistent.parse_th(fields["th"]) if "th" in fields else None
            except ValueError:
                threshold = None
            rv = fields.get("rv")
            return threshold, int(rv, 16) if rv and _RV.fullmatch(rv) else None
    return None, None


def _loads(text: str | None) -> dict[str, Any]:
    if not text or text == "{}":
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- Options ------------------------------------------------------------------------------------

_OPTIONS = ("dimensions", "bounds", "flush_interval_s", "max_series", "exemplars_per_series", "namespace")


def from_options(options: dict[str, Any] | None) -> SpanMetrics:
    """Build a :class:`SpanMetrics` from the receiver config's ``spanmetrics`` options.

    Keys (all optional): ``dimensions`` (names, or ``{name, default}`` maps), ``bounds``
    (seconds as numbers, or durations like ``"250ms"``, ``"2s"``), ``flush_interval_s``,
    ``max_series``, ``exemplars_per_series``, ``namespace``.

    Raises:
        ValueError: Naming the option that is wrong and what it accepts.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"spanmetrics: unknown option {unknown[0]!r}; accepted: {', '.join(_OPTIONS)}")
    kwargs: dict[str, Any] = {}
    if "dimensions" in options:
        kwargs["dimensions"] = _dimensions(options["dimensions"])
    if "bounds" in options:
        kwargs["bounds"] = _bounds(options["bounds"])
    if "flush_interval_s" in options:
        value = options["flush_interval_s"]
        _require(
            _number(value) and 0 < value <= 86400,
            "flush_interval_s",
            value,
            "a number of seconds in (0, 86400]",
        )
        kwargs["flush_interval_s"] = float(value)
    for key, low in (("max_series", 1), ("exemplars_per_series", 0)):
        if key in options:
            value = options[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= 1_000_000
            _require(ok, key, value, f"an integer from {low} to 1000000")
            kwargs[key] = value
    if "namespace" in options:
        value = options["namespace"]
        ok = isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.]*", value) is not None
        _require(ok, "namespace", value, "a metric name prefix like 'traces.span.metrics'")
        kwargs["namespace"] = value
    return SpanMetrics(**kwargs)


def _dimensions(value: Any) -> tuple[Dimension, ...]:
    _require(
        isinstance(value, list), "dimensions", value, "a list of attribute names or {name, default} maps"
    )
    out: list[Dimension] = []
    for i, item in enumerate(value):
        where = f"dimensions[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        _require(isinstance(item, dict), where, item, "an attribute name or a {name, default} map")
        extra = sorted(set(item) - {"name", "default"})
        _require(not extra, f"{where}.{extra[0] if extra else ''}", item, "only the keys name and default")
        name, default = item.get("name"), item.get("default")
        _require(isinstance(name, str) and name.strip() != "", f"{where}.name", name, "a non-empty string")
        builtin = f"a name other than the built-in dimensions {', '.join(_BUILTIN_DIMENSIONS)}"
        _require(name not in _BUILTIN_DIMENSIONS, f"{where}.name", name, builtin)
        _require(all(d.name != name for d in out), f"{where}.name", name, "a name not listed before")
        ok = default is None or isinstance(default, (str, int, float))
        _require(ok, f"{where}.default", default, "a string or number")
        out.append(Dimension(name, None if default is None else _label(default)))
    return tuple(out)


def _bounds(value: Any) -> tuple[float, ...]:
    accepted = "a non-empty list of increasing positive durations: seconds, or strings like '250ms', '2s'"
    _require(isinstance(value, list) and 0 < len(value) <= 200, "bounds", value, accepted)
    out: list[float] = []
    for i, item in enumerate(value):
        seconds: float | None = None
        if _number(item):
            seconds = float(item)
        elif isinstance(item, str) and (m := _DURATION.fullmatch(item.strip())):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        _require(
            seconds is not None and math.isfinite(seconds) and seconds > 0, f"bounds[{i}]", item, accepted
        )
        _require(
            not out or seconds > out[-1],
            f"bounds[{i}]",
            item,
            f"a bound greater than the one before ({out[-1] if out else ''})",
        )
        out.append(seconds)
    return tuple(out)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, option: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"spanmetrics option {option}: expected {accepted}, got {value!r}")
