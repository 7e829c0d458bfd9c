"""Decode OTLP export requests into the columnar batches of ``otel_audio.processors.base``.

One request becomes one batch: :func:`decode_metrics` -> :class:`MetricBatch` (points, series,
exemplars), :func:`decode_traces` -> :class:`SpanBatch`, :func:`decode_logs` -> :class:`LogBatch`.
Each returns a :class:`Decoded` carrying the batch, how many items were refused, and why: the
numbers and text of the OTLP ``partial_success`` reply. Invalid items are refused one by one
with a message naming where they were (``resource_spans[0].scope_spans[1].spans[3]: trace_id must
be 16 bytes, got 3``); the rest of the request is kept. Nothing is dropped without being counted
(a metric without data has no points to count: it is reported in the message only).

What is refused:

- spans: trace_id not 16 bytes or all zero, span_id not 8 bytes or all zero, parent_span_id
  neither empty nor 8 bytes, kind or status code outside the OTLP enums;
- metrics: a metric without a name or without data (all its points), a sum or histogram whose
  aggregation_temporality is not delta or cumulative; a point without a value (unless flagged
  "no recorded value"), a histogram whose bucket_counts do not match its bounds or count, a
  point of a series beyond the metric's series budget (:mod:`.cardinality`);
- logs: trace_id / span_id of the wrong length, severity_number outside 0-24;
- any item whose times do not fit int64 nanoseconds (after year 2262).

Series identity. ``series_id = processors.base.series_id(metric, resource, scope, attributes)``
where ``resource`` and ``attributes`` are the canonical JSON of the resource and point attribute
sets, and the **scope part** is the canonical JSON of ``{"name": scope name, "version": scope
version, "attributes": scope attributes}`` (:func:`scope_identity`); schema URLs are not part of
it. Equal inputs give equal ids in every process and after restarts.

Attribute values (OTLP AnyValue) become JSON values: strings, booleans, integers, doubles
(NaN and infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as in proto3
JSON), arrays, key-value lists as objects, bytes as base64 strings, an empty value as null.

A point flagged "no recorded value" (flags bit 0) keeps its series, times and flags; its value
columns (value, count, min, max, buckets, quantiles) are null. Integer values become float64.
Points are grouped by kind in the table (numbers, histograms, exponential histograms,
summaries), each group in request order. The series table has one row per series referenced by
the points; when two Metric messages of one request give the same series id (same name,
resource, scope and attributes but, say, another unit), the first one describes it.

Cost. Decoding is one Python pass over the points, filling plain row tuples that become Arrow
columns once per request. The JSON and series id of a point attribute set are cached across
requests, keyed by the serialized attribute bytes (bounded; thread-safe), so a series seen
before costs one dict lookup. Decoding is safe to call from several threads at once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    MetricType,
    Temporality,
    series_id,
)
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode_spans import decode_logs, decode_traces
from otel_audio.receiver.decoded import I64_MAX, MAX_ERRORS, Decoded, Errors, rows_table
from otel_audio.receiver.otlp_values import (
    any_value,
    attribute_key,
    attributes_dict,
    attributes_json,
    cached_attributes_json,
    resource_identity,
    scope_identity,
    store_bounded,
)

# The series id of a point attribute set, per metric context, cached like the attribute JSON.
_series_cache: dict[tuple[str, bytes], tuple[int, str]] = {}

_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
TEMPORALITY = {1: Temporality.DELTA.value, 2: Temporality.CUMULATIVE.value}


@dataclass(frozen=True)
class _MetricContext:
    """What every series of one Metric message shares."""

    index: int  # into MetricsBuilder.contexts
    key: str  # cache key: metric, resource and scope identity
    metric: str
    resource: str
    scope: str  # scope_identity()


# SERIES_SCHEMA without the columns that differ between the series of one Metric message.
_CONTEXT_SCHEMA = pa.schema([f for f in SERIES_SCHEMA if f.name not in ("series_id", "attributes")])


class MetricsBuilder:
    """Rows of one metrics request; points refer to their series by index (their "row")."""

    def __init__(self) -> None:
        self.contexts: list[tuple] = []  # _CONTEXT_SCHEMA rows, one per Metric message
        self.context_metric: list[int] = []  # context -> metric code
        self.metric_codes: dict[str, int] = {}  # metric name -> code, in order of appearance
        self.series_sid: list[int] = []  # row -> series_id
        self.series_context: list[int] = []  # row -> context
        self.series_attrs: list[str] = []  # row -> point attributes, canonical JSON
        self.row_of: dict[int, int] = {}  # series_id -> row
        self.numbers: list[tuple] = []  # (row, time, start, value, flags)
        self.number_columns: dict[str, np.ndarray] | None = None  # the same, as columns (decode_fast)
        self.histograms: list[tuple] = []
        self.exponentials: list[tuple] = []
        self.summaries: list[tuple] = []
        self.exemplars: list[tuple] = []  # (row, time, value, trace_id, span_id, attributes)

    def context(self, describe: tuple, resource: str, scope: str) -> _MetricContext:
        metric = describe[0]
        self.context_metric.append(self.metric_codes.setdefault(metric, len(self.metric_codes)))
        self.contexts.append(describe)
        key = "\x00".join((metric, resource, scope))
        return _MetricContext(len(self.contexts) - 1, key, metric, resource, scope)

    def row(self, ctx: _MetricContext, attributes: Any) -> int:
        """Row of the series of a point with ``attributes`` in the metric ``ctx``."""
        attr_key = attribute_key(attributes)
        hit = _series_cache.get((ctx.key, attr_key)) or self._identify(ctx, attributes, attr_key)
        return self.add_series(ctx, *hit)

    def add_series(self, ctx: _MetricContext, sid: int, attributes_json: str) -> int:
        """Row of series ``sid``; the first metric context that names a series describes it."""
        index = self.row_of.get(sid)
        if index is None:
            index = self.row_of[sid] = len(self.series_sid)
            self.series_sid.append(sid)
            self.series_context.append(ctx.index)
            self.series_attrs.append(attributes_json)
        return index

    @staticmethod
    def _identify(ctx: _MetricContext, attributes: Any, attr_key: bytes) -> tuple[int, str]:
        attrs = cached_attributes_json(attributes, attr_key)
        hit = (series_id(ctx.metric, ctx.resource, ctx.scope, attrs), attrs)
        store_bounded(_series_cache, (ctx.key, attr_key), hit)
        return hit

    def add_exemplars(self, row: int, exemplars: Any) -> None:
        for ex in exemplars:
            kind = ex.WhichOneof("value")
            value = ex.as_double if kind == "as_double" else (float(ex.as_int) if kind == "as_int" else None)
            time = ex.time_unix_nano
            self.exemplars.append(
                (
                    row,
                    time if time <= I64_MAX else None,
                    value,
                    ex.trace_id.hex(),
                    ex.span_id.hex(),
                    cached_attributes_json(ex.filtered_attributes),
                )
            )


def _times_ok(p: Any, i: int, errs: Errors, where: Any) -> bool:
    if (p.time_unix_nano | p.start_time_unix_nano) <= I64_MAX:
        return True
    errs.add(f"{where()}.data_points[{i}]: time_unix_nano or start_time_unix_nano beyond int64 nanoseconds")
    return False


def _numbers(b: MetricsBuilder, points: Any, ctx: _MetricContext, errs: Errors, where: Any) -> None:
    append, row = b.numbers.append, b.row
    for i, p in enumerate(points):
        time, start, flags = p.time_unix_nano, p.start_time_unix_nano, p.flags
        if (time | start) > I64_MAX:
            _times_ok(p, i, errs, where)
            continue
        if flags & _NO_RECORDED_VALUE:
            value = None
        else:
            kind = p.WhichOneof("value")
            if kind == "as_double":
                value = p.as_double
            elif kind == "as_int":
                value = float(p.as_int)
            else:
                errs.add(f"{where()}.data_points[{i}]: no value (as_double or as_int) and not flagged")
                continue
        index = row(ctx, p.attributes)
        append((index, time, start, value, flags))
        if p.exemplars:
            b.add_exemplars(index, p.exemplars)


def _bounds_problem(bounds: list[float]) -> str | None:
    if any(not lo < hi for lo, hi in itertools.pairwise(bounds)) or any(map(math.isnan, bounds)):
        return "explicit_bounds must be strictly increasing"
    return None


def _histograms(b: MetricsBuilder, points: Any, ctx: _MetricContext, errs: Errors, where: Any) -> None:
    append = b.histograms.append
    checked: list[float] | None = None  # bounds repeat from point to point: check each new set once
    for i, p in enumerate(points):
        if not _times_ok(p, i, errs, where):
            continue
        flags = p.flags
        if flags & _NO_RECORDED_VALUE:
            values: tuple = (None,) * 6
        else:
            bounds, counts, count = list(p.explicit_bounds), list(p.bucket_counts), p.count
            problem = None
            if counts and len(counts) != len(bounds) + 1:
                problem = (
                    f"{len(counts)} bucket_counts for {len(bounds)} explicit_bounds, "
                    f"expected 0 or {len(bounds) + 1}"
                )
            elif bounds != checked and (problem := _bounds_problem(bounds)) is None:
                checked = bounds
            if problem is None and counts and sum(counts) != count:
                problem = f"count {count} is not the sum of bucket_counts ({sum(counts)})"
            if problem:
                errs.add(f"{where()}.data_points[{i}]: {problem}")
                continue
            values = (
                p.sum if p.HasField("sum") else None,
                count,
                p.min if p.HasField("min") else None,
                p.max if p.HasField("max") else None,
                bounds,
                counts,
            )
        index = b.row(ctx, p.attributes)
        append((index, p.time_unix_nano, p.start_time_unix_nano, *values, flags))
        if p.exemplars:
            b.add_exemplars(index, p.exemplars)


def _exponentials(b: MetricsBuilder, points: Any, ctx: _MetricContext, errs: Errors, where: Any) -> None:
    append = b.exponentials.append
    for i, p in enumerate(points):
        if not _times_ok(p, i, errs, where):
            continue
        flags = p.flags
        if flags & _NO_RECORDED_VALUE:
            values: tuple = (None,) * 11
        else:
            positive, negative = p.positive, p.negative
            pos, neg = list(positive.bucket_counts), list(negative.bucket_counts)
            total = p.zero_count + sum(pos) + sum(neg)
            if total != p.count:
                errs.add(
                    f"{where()}.data_points[{i}]: count {p.count} is not zero_count + bucket counts ({total})"
                )
                continue
            values = (
                p.sum if p.HasField("sum") else None,
                p.count,
                p.min if p.HasField("min") else None,
                p.max if p.HasField("max") else None,
                p.scale,
                p.zero_count,
                p.zero_threshold,
                positive.offset,
                pos,
                negative.offset,
                neg,
            )
        index = b.row(ctx, p.attributes)
        append((index, p.time_unix_nano, p.start_time_unix_nano, *values, flags))
        if p.exemplars:
            b.add_exemplars(index, p.exemplars)


def _summaries(b: MetricsBuilder, points: Any, ctx: _MetricContext, errs: Errors, where: Any) -> None:
    append = b.summaries.append
    for i, p in enumerate(points):
        if not _times_ok(p, i, errs, where):
            continue
        flags = p.flags
        if flags & _NO_RECORDED_VALUE:
            values: tuple = (None,) * 4
        else:
            qv = p.quantile_values
            values = (p.sum, p.count, [q.quantile for q in qv], [q.value for q in qv])
        append((b.row(ctx, p.attributes), p.time_unix_nano, p.start_time_unix_nano, *values, flags))


# Columns each group fills, in the order of its row tuples; the others are null.
_GROUP_COLUMNS = {
    "numbers": ("value",),
    "histograms": ("value", "count", "min", "max", "bounds", "bucket_counts"),
    "exponentials": (
        "value",
        "count",
        "min",
        "max",
        "exp_scale",
        "exp_zero_count",
        "exp_zero_threshold",
        "exp_positive_offset",
        "exp_positive_counts",
        "exp_negative_offset",
        "exp_negative_counts",
    ),
    "summaries": ("value", "count", "quantiles", "quantile_values"),
}


def _points_table(rows: list[tuple], filled: tuple[str, ...], sids: np.ndarray) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    given = {"time_unix_nano": columns[1], "start_time_unix_nano": columns[2], "flags": columns[-1]}
    given.update(zip(filled, columns[3:-1], strict=True))
    rows_index = np.fromiter(columns[0], dtype=np.intp, count=len(rows))
    arrays = []
    for field in POINTS_SCHEMA:
        if field.name == "series_id":
            arrays.append(pa.array(sids[rows_index], type=pa.uint64()))
        elif field.name in given:
            arrays.append(pa.array(list(given[field.name]), type=field.type))
        else:
            arrays.append(pa.nulls(len(rows), type=field.type))
    return pa.Table.from_arrays(arrays, schema=POINTS_SCHEMA)


def _describe(metric: Any, kind: str, data: Any, service: str, resource: str, scope: Any) -> tuple:
    """The _CONTEXT_SCHEMA row of a metric; temporality None when it is invalid for the kind."""
    temporality, monotonic = Temporality.UNSPECIFIED.value, False
    if kind in ("sum", "histogram", "exponential_histogram"):
        temporality = TEMPORALITY.get(data.aggregation_temporality)
        monotonic = kind == "sum" and data.is_monotonic
    return (
        metric.name,
        _METRIC_TYPE[kind],
        metric.unit,
        metric.description,
        temporality,
        monotonic,
        service,
        resource,
        scope.name,
        scope.version,
    )


_METRIC_TYPE = {
    "gauge": MetricType.GAUGE.value,
    "sum": MetricType.SUM.value,
    "histogram": MetricType.HISTOGRAM.value,
    "exponential_histogram": MetricType.EXPONENTIAL_HISTOGRAM.value,
    "summary": MetricType.SUMMARY.value,
}
_DECODERS = {
    "gauge": _numbers,
    "sum": _numbers,
    "histogram": _histograms,
    "exponential_histogram": _exponentials,
    "summary": _summaries,
}


def decode_metrics(request: ExportMetricsServiceRequest, limiter: CardinalityLimiter) -> Decoded[MetricBatch]:
    """Decode a metrics export request; points over a series budget are refused (see module doc)."""
    errs = Errors()
    b = MetricsBuilder()
    for ri, rm in enumerate(request.resource_metrics):
        resource, service = resource_identity(rm.resource)
        for si, sm in enumerate(rm.scope_metrics):
            scope = sm.scope
            scope_part = scope_identity(scope)
            for mi, metric in enumerate(sm.metrics):

                def where(ri: int = ri, si: int = si, mi: int = mi) -> str:
                    return f"resource_metrics[{ri}].scope_metrics[{si}].metrics[{mi}]"

                kind = metric.WhichOneof("data")
                if kind is None:
                    errs.add(f"{where()}: metric {metric.name!r} has no data (gauge, sum, histogram, ...)", 0)
                    continue
                decode_metric(b, metric, kind, service, resource, scope, scope_part, errs, where)
    batch = assemble_metrics(b, limiter, errs)
    return Decoded(batch, errs.rejected, errs.lines(), errs.over_budget)


def decode_metric(
    b: MetricsBuilder,
    metric: Any,
    kind: str,
    service: str,
    resource: str,
    scope: Any,
    scope_part: str,
    errs: Errors,
    where: Any,
) -> None:
    """One Metric message with data of ``kind`` into the builder, or refused whole with a message."""
    data = getattr(metric, kind)
    describe = _describe(metric, kind, data, service, resource, scope)
    points = data.data_points
    if not metric.name:
        errs.add(f"{where()}: metric has no name; {len(points)} data points rejected", len(points))
        return
    if describe[4] is None:
        errs.add(
            f"{where()}: metric {metric.name!r}: aggregation_temporality "
            f"{data.aggregation_temporality} is not 1 (delta) or 2 (cumulative); "
            f"{len(points)} data points rejected",
            len(points),
        )
        return
    _DECODERS[kind](b, points, b.context(describe, resource, scope_part), errs, where)


def _admit(
    b: MetricsBuilder, sids: np.ndarray, point_rows: np.ndarray, limiter: CardinalityLimiter, errs: Errors
) -> np.ndarray:
    """Bool mask of the points within their metric's series budget; refusals counted in ``errs``."""
    series_metric = np.asarray(b.context_metric, dtype=np.intp)[np.asarray(b.series_context, dtype=np.intp)]
    point_metric = series_metric[point_rows]
    keep = np.ones(point_rows.size, dtype=bool)
    order = np.argsort(point_metric, kind="stable")
    bounds = np.searchsorted(point_metric[order], np.arange(len(b.metric_codes) + 1))
    for code, name in enumerate(b.metric_codes):
        positions = order[bounds[code] : bounds[code + 1]]
        admitted = limiter.admit(name, sids[point_rows[positions]])
        if not admitted.all():
            keep[positions] = admitted
            refused = positions[~admitted]
            series = np.unique(point_rows[refused]).size
            errs.add(
                f"metric {name!r}: {refused.size} data points of {series} new series rejected, "
                f"over the limit of {limiter.max_series_per_metric} series per metric",
                int(refused.size),
            )
            errs.over_budget += int(refused.size)
    return keep


def _series_table(b: MetricsBuilder, sids: np.ndarray, rows: np.ndarray | None) -> pa.Table:
    """SERIES_SCHEMA rows of the series ``rows`` (all when None): context columns by ``take``."""
    contexts = np.asarray(b.series_context, dtype=np.intp)
    attrs = b.series_attrs
    if rows is not None:
        sids, contexts, attrs = sids[rows], contexts[rows], [attrs[i] for i in rows.tolist()]
    shared = rows_table(b.contexts, _CONTEXT_SCHEMA).take(pa.array(contexts))
    arrays = [pa.array(sids, type=pa.uint64()), *shared.columns, pa.array(attrs, type=pa.string())]
    return pa.Table.from_arrays(arrays, schema=SERIES_SCHEMA)


def _number_columns_table(columns: dict[str, np.ndarray], sids: np.ndarray) -> pa.Table:
    """The numbers group from columns (decode_fast) rather than row tuples."""
    given = {
        "series_id": pa.array(sids[columns["rows"]], type=pa.uint64()),
        "time_unix_nano": pa.array(columns["time_unix_nano"], type=pa.int64()),
        "start_time_unix_nano": pa.array(columns["start_time_unix_nano"], type=pa.int64()),
        "value": pa.array(columns["value"], type=pa.float64(), mask=columns["value_missing"]),
        "flags": pa.array(columns["flags"], type=pa.uint32()),
    }
    size = columns["rows"].size
    arrays = [given[f.name] if f.name in given else pa.nulls(size, type=f.type) for f in POINTS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=POINTS_SCHEMA)


def assemble_metrics(b: MetricsBuilder, limiter: CardinalityLimiter, errs: Errors) -> MetricBatch:
    groups = [(name, getattr(b, name)) for name in _GROUP_COLUMNS]
    groups = [(name, rows) for name, rows in groups if rows]
    if not groups and b.number_columns is None:
        return MetricBatch(
            POINTS_SCHEMA.empty_table(), SERIES_SCHEMA.empty_table(), EXEMPLARS_SCHEMA.empty_table()
        )
    sids = np.array(b.series_sid, dtype=np.uint64)
    row_parts = [
        np.fromiter((row[0] for row in rows), dtype=np.intp, count=len(rows)) for _name, rows in groups
    ]
    tables = [_points_table(rows, _GROUP_COLUMNS[name], sids) for name, rows in groups]
    if b.number_columns is not None:  # numbers come first, as in the row-tuple path
        row_parts.insert(0, b.number_columns["rows"].astype(np.intp))
        tables.insert(0, _number_columns_table(b.number_columns, sids))
    point_rows = np.concatenate(row_parts)
    keep = _admit(b, sids, point_rows, limiter, errs)
    points = pa.concat_tables(tables)
    used_rows = None
    exemplar_rows = b.exemplars
    if not keep.all():
        points = points.filter(pa.array(keep))
        used = np.zeros(sids.size, dtype=bool)
        used[point_rows[keep]] = True
        used_rows = np.flatnonzero(used)
        exemplar_rows = [row for row in b.exemplars if used[row[0]]]
    exemplars = rows_table([(b.series_sid[r[0]], *r[1:]) for r in exemplar_rows], EXEMPLARS_SCHEMA)
    return MetricBatch(points, _series_table(b, sids, used_rows), exemplars)


__all__ = [
    "MAX_ERRORS",
    "Decoded",
    "any_value",
    "attributes_dict",
    "attributes_json",
    "decode_logs",
    "decode_metrics",
    "decode_traces",
    "scope_identity",
]
