"""The results of a closed aggregation window: each group's aggregates, and the rows they are emitted as.

:mod:`otel_audio.processors.aggregation` merges a window's rollup rows per group; this module
turns one merged row into its aggregations (``avg``, ``rate``, ``pNN`` ..., see **Aggregations**
in that module's docstring) and builds the gauge series and points that carry them. It holds no
window state: every function here is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from otel_audio.processors.aggregation_options import PERCENTILE, WINDOW_ATTRIBUTE, Rule
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    MetricType,
    Temporality,
    canonical_json,
    series_id,
)
from otel_audio.store import histograms as hist

HISTOGRAM_TYPES = (MetricType.HISTOGRAM.value, MetricType.EXPONENTIAL_HISTOGRAM.value)
_SCOPE_NAME = "otel_audio.processors.aggregation"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME})


def group_results(
    rule: Rule,
    kind: str,
    row: dict[str, Any],
    values: np.ndarray | None,
    width_ns: int,
    quantiles: dict[str, float] | None = None,
):
    """Every aggregation of one group's merged rollup row (``quantiles``: the group's percentiles
    of its point values, when computed for every group at once)."""
    is_hist = kind in HISTOGRAM_TYPES
    if is_hist:
        count, total = row["increase"], row["sum_increase"]
        low, high = row["hist_min"], row["hist_max"]
    else:
        count, total, low, high = row["count"], row["sum"], row["min"], row["max"]
    out: dict[str, float | None] = {}
    for agg in rule.aggs:
        match = PERCENTILE.fullmatch(agg)
        if match:
            q = float(match.group(1)) / 100
            if is_hist:
                out[agg] = _histogram_quantile(row, q)
            else:
                out[agg] = quantiles.get(agg) if quantiles is not None else _values_quantile(values, q)
        elif agg == "avg":
            out[agg] = total / count if count else None
        elif agg in ("count", "sum", "min", "max", "last", "increase"):
            out[agg] = {"count": count, "sum": total, "min": low, "max": high}.get(agg, row.get(agg))
        elif agg == "rate":
            out[agg] = None if row["increase"] is None else row["increase"] / (width_ns / 1e9)
    return out


def sorted_quantiles(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """``numpy.quantile(group, q)`` of each sorted run ``values[start:start + count]``, bit for bit.

    numpy's linear method: index ``(n - 1) q``, the two order statistics around it, and its
    ``_lerp`` (from the upper one when the weight is at least 0.5).
    """
    virtual = (counts - 1) * q
    below = np.floor(virtual)
    above = below + 1
    last = virtual >= counts - 1
    below[last] = above[last] = -1
    gamma = virtual - below
    low = values[starts + np.where(below < 0, counts - 1, below).astype(np.intp)]
    high = values[starts + np.where(above < 0, counts - 1, above).astype(np.intp)]
    diff = high - low
    out = low + diff * gamma
    upper = gamma >= 0.5
    out[upper] = (high - diff * (1 - gamma))[upper]
    return out


def _values_quantile(values: np.ndarray | None, q: float) -> float | None:
    if values is None or values.size == 0:
        return None
    return float(np.quantile(values, q))


def _histogram_quantile(row: dict[str, Any], q: float) -> float | None:
    if row["exp_scale"] is not None:
        h = hist.ExponentialHistogram(
            scale=row["exp_scale"],
            zero_count=row["exp_zero_count"] or 0,
            positive_offset=row["exp_positive_offset"] or 0,
            positive_counts=np.asarray(row["exp_positive_counts"] or [], np.int64),
            negative_offset=row["exp_negative_offset"] or 0,
            negative_counts=np.asarray(row["exp_negative_counts"] or [], np.int64),
        )
        return hist.quantile_exponential(h, q) if h.count else None
    if row["bounds"] is None or row["bucket_counts"] is None or row["mixed_bounds"]:
        return None
    return float(hist.quantile_explicit(row["bounds"], np.asarray(row["bucket_counts"]), q))


def series_row(rule: Rule, agg: str, key: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The SERIES_SCHEMA row of the gauge carrying ``agg`` of the group with labels ``key``."""
    labels = dict(key)
    service = labels.get("service") or labels.get("service.name") or ""
    resource = canonical_json({"service.name": service} if service else {})
    attributes = canonical_json(
        {**{k: v for k, v in labels.items() if v != ""}, WINDOW_ATTRIBUTE: rule.window_label}
    )
    metric = f"{rule.metric}.{agg}"
    return {
        "series_id": series_id(metric, resource, _SCOPE, attributes),
        "metric": metric,
        "type": MetricType.GAUGE.value,
        "unit": "",
        "description": f"{agg} of {rule.metric} per {rule.window_label} window.",
        "temporality": Temporality.UNSPECIFIED.value,
        "monotonic": False,
        "service": service,
        "resource": resource,
        "scope": _SCOPE_NAME,
        "scope_version": "",
        "attributes": attributes,
    }


def points_table(sids: list[int], times: list[int], starts: list[int], values: list[float]) -> pa.Table:
    """POINTS_SCHEMA rows of gauge points (flags 0, the other fields null)."""
    n = len(sids)
    columns = {
        "series_id": pa.array(sids, pa.uint64()),
        "time_unix_nano": pa.array(times, pa.int64()),
        "start_time_unix_nano": pa.array(starts, pa.int64()),
        "value": pa.array(values, pa.float64()),
        "flags": pa.array(np.zeros(n, np.uint32)),
    }
    return pa.table(
        [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in POINTS_SCHEMA],
        schema=POINTS_SCHEMA,
    )


def concat_batches(batches: Sequence[MetricBatch]) -> MetricBatch:
    """The points of every batch in one, each series listed once (an empty batch for none)."""
    if not batches:
        return MetricBatch(
            POINTS_SCHEMA.empty_table(), SERIES_SCHEMA.empty_table(), EXEMPLARS_SCHEMA.empty_table()
        )
    series = pa.concat_tables([b.series for b in batches])
    if series.num_rows:
        _, first = np.unique(series.column("series_id").to_numpy(), return_index=True)
        series = series.take(np.sort(first))
    return MetricBatch(
        points=pa.concat_tables([b.points for b in batches]),
        series=series,
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )
