"""Storage tiers (raw, 1 minute, 1 hour): which one answers a range query, and how rollups answer it.

The store keeps every metric at three resolutions, each with its own retention:

- ``raw``: the points as received (default retention 7 days);
- ``1m``: one :mod:`~otel_audio.store.rollup` row per series and minute (30 days);
- ``1h``: one row per series and hour, rolled up from the 1-minute rows (90 days).

:func:`choose_tier` picks the tier for a query from its range, step and the current time;
:func:`range_from_rollups` answers one group of a :class:`~otel_audio.store.query.RangeQuery` from
rollup rows, with the same meaning as the raw answer of ``QueryEngine.query_range`` (``docs/query.md``,
section "Rollup tiers"). Matching series and grouping them stays with the query engine.

Example::

    tier = choose_tier(q.start_ns, q.end_ns, q.step_ns, now_ns, RetentionConfig())
    if tier is RAW or not answerable_from_rollups(kind, q.agg):
        ...  # the raw path of QueryEngine
    else:
        result = range_from_rollups(rows_of_the_group, q, kind)   # labels left for the caller
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.store import histograms as hist
from otel_audio.store.query import PERCENTILE, QueryError, RangeQuery, SeriesResult, bucket_count, parse_agg
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, merge_rollups

if TYPE_CHECKING:
    from otel_audio.store.view import StoreView

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Tier:
    """One resolution of stored metrics.

    Args:
        name: directory and configuration name (``raw``, ``1m``, ``1h``).
        window_ns: rollup window; 0 for raw points.
        default_retention_ns: how long its data is kept unless configured otherwise.
    """

    name: str
    window_ns: int
    default_retention_ns: int


RAW = Tier("raw", 0, 7 * DAY_NS)  # points as received
MINUTE = Tier("1m", MINUTE_NS, 30 * DAY_NS)  # rollup rows per series and minute
HOUR = Tier("1h", HOUR_NS, 90 * DAY_NS)  # rollup rows per series and hour, built from 1m
TIERS = (RAW, MINUTE, HOUR)  # finest first
TIER_BY_NAME = {t.name: t for t in TIERS}

# Aggregations rollups answer per metric type; percentiles only from merged histograms.
_ROLLUP_AGGS = {
    "gauge": ("avg", "min", "max", "sum", "count", "last"),
    "sum": ("avg", "min", "max", "sum", "count", "last", "rate", "increase"),
    "histogram": ("count", "sum", "avg", "min", "max", "rate", "increase", "pNN"),
    "exponential_histogram": ("count", "sum", "avg", "min", "max", "rate", "increase", "pNN"),
    "summary": ("count", "sum", "avg", "rate", "increase"),
}


def choose_tier(
    start_ns: int, end_ns: int, step_ns: int, now_ns: int, retention: Mapping[str, int] | None = None
) -> Tier:
    """The tier a range query should read.

    The rule: among the tiers whose window is at most the step (raw always qualifies), take the
    coarsest whose retention still covers ``start_ns`` (``start_ns >= now_ns - retention``),
    preferring one whose window divides the step (then every bucket is made of whole windows and
    the answer equals the raw one). If no such tier covers ``start_ns``, take the qualifying tier
    whose retention reaches furthest back (the older part of the range is simply empty). So a
    step under a minute reads raw points, a 5-minute step over the last day reads 1-minute rows,
    and a 1-hour step over the last 60 days reads 1-hour rows.

    Args:
        retention: retention in nanoseconds by tier name (a ``RetentionConfig`` works); missing
            tiers use their default.
    """
    if step_ns <= 0:
        raise QueryError(f"step_ns must be > 0, got {step_ns}")
    if end_ns < start_ns:
        raise QueryError(f"end_ns {end_ns} is before start_ns {start_ns}")
    retention = retention or {}

    def keeps(tier: Tier) -> int:
        return retention.get(tier.name, tier.default_retention_ns)

    eligible = [t for t in TIERS if t.window_ns <= step_ns]
    covering = [t for t in eligible if start_ns >= now_ns - keeps(t)]
    if covering:
        dividing = [t for t in covering if t.window_ns == 0 or step_ns % t.window_ns == 0]
        return max(dividing or covering, key=lambda t: t.window_ns)
    return max(eligible, key=lambda t: (keeps(t), t.window_ns))


def answerable_from_rollups(kind: str, agg: str) -> bool:
    """Whether rollup rows can answer ``agg`` for a metric of type ``kind``."""
    if PERCENTILE.fullmatch(agg):
        agg = "pNN"
    return agg in _ROLLUP_AGGS.get(kind, ())


def range_from_rollups(rollups: pa.Table, q: RangeQuery, kind: str) -> SeriesResult:
    """Answer ``q`` for one group of series from their rollup rows.

    Args:
        rollups: ``ROLLUP_SCHEMA`` rows of the group's series, of any tiers as long as rows of one
            series do not overlap in time (e.g. 1-hour rows up to some hour and 1-minute rows after
            it); rows of the very same window (two flushes each wrote part of it) are merged.
            Rows outside the query's buckets are ignored.
        q: the request; ``group_by`` and ``matchers`` are not looked at (the caller selected the
            rows). Each rollup window is counted in the bucket holding its start, so the answer
            equals the raw one when ``start_ns`` and ``step_ns`` are multiples of the windows.
        kind: the metric type (``SERIES_SCHEMA.type``).

    Returns:
        A :class:`SeriesResult` with empty ``labels`` (the caller knows the group's labels); NaN
        where a bucket has no rows.

    Raises:
        QueryError: as the raw query for a bad step, range or agg; also when ``agg`` needs the
            raw points (percentiles of gauges, sums and summaries), when a row's window is wider
            than the step, or when explicit histogram bounds differ inside the range.
        ValueError: when rows of one series overlap in time (a wiring error).
    """
    n = bucket_count(q)
    stamps = q.start_ns + np.arange(n, dtype=np.int64) * q.step_ns
    ids = np.unique(rollups.column("series_id").to_numpy())
    values = grouped_values(rollups, ids, np.zeros(ids.size, np.intp), 1, q, kind)[0]
    return SeriesResult(labels={}, timestamps_ns=stamps, values=values)


def values_from_rollups(
    view: StoreView, tier: Tier, ids: np.ndarray, gidx: np.ndarray, n_groups: int, q: RangeQuery, kind: str
) -> np.ndarray:
    """Buckets of ``q`` for every group from ``tier``'s rollup rows: a (groups x buckets) matrix.

    Args:
        ids: the selected series; ``gidx[i]`` is the group of ``ids[i]``.
    """
    n = bucket_count(q)
    histograms = kind in ("histogram", "exponential_histogram", "summary")
    rows = view.rollups(tier, ids, q.start_ns, q.start_ns + n * q.step_ns, histograms=histograms)
    return grouped_values(rows, ids, gidx, n_groups, q, kind)


def grouped_values(
    rollups: pa.Table, ids: np.ndarray, gidx: np.ndarray, n_groups: int, q: RangeQuery, kind: str
) -> np.ndarray:
    """The (groups x buckets) answer of ``q`` from rollup rows of the series ``ids``.

    Two merges do the work for every group at once: rows into (series, bucket), then those into
    (group, bucket). Only explicit-histogram percentiles go group by group, because each group
    may have its own bucket bounds.
    """
    n = bucket_count(q)
    agg, quantile = parse_agg(q.agg)
    _check_agg(q.metric, kind, agg)
    values = np.full((n_groups, n), np.nan)
    ws = rollups.column("window_start_ns").to_numpy()
    rows = rollups.filter(pa.array((ws >= q.start_ns) & (ws < q.start_ns + n * q.step_ns)))
    if rows.num_rows == 0:
        return values
    widest = int(pc.max(rows.column("window_ns")).as_py())
    if widest > q.step_ns:
        raise QueryError(
            f"rollup windows of {widest} ns are wider than step_ns {q.step_ns}; "
            "use a finer tier or a step of at least the window"
        )
    _check_no_overlap(rows)
    per_series = merge_rollups(rows, q.step_ns, q.start_ns)
    order = np.argsort(ids)
    sid = per_series.column("series_id").to_numpy()
    group_of_row = np.asarray(gidx)[order[np.searchsorted(ids[order], sid)]]
    merged = merge_rollups(
        per_series.set_column(0, "series_id", pa.array(group_of_row.astype(np.uint64))), q.step_ns, q.start_ns
    )
    g = merged.column("series_id").to_numpy().astype(np.intp)
    b = (merged.column("window_start_ns").to_numpy() - q.start_ns) // q.step_ns
    step_s = q.step_ns / 1e9
    is_hist = kind in ("histogram", "exponential_histogram", "summary")

    def col(name: str) -> np.ndarray:
        return pc.fill_null(merged.column(name).cast(pa.float64()), np.nan).to_numpy()

    if agg == "pNN" and kind == "histogram":
        for group in np.unique(g).tolist():
            mine = g == group
            values[group, b[mine]] = _percentiles(merged.filter(pa.array(mine)), kind, quantile, q.metric)
    elif agg == "pNN":
        values[g, b] = _percentiles(merged, kind, quantile, q.metric)
    elif agg in ("increase", "rate"):
        values[g, b] = col("increase") / (step_s if agg == "rate" else 1.0)
    elif is_hist and agg in ("count", "sum", "avg"):
        count, total = col("increase"), col("sum_increase")
        with np.errstate(invalid="ignore", divide="ignore"):
            values[g, b] = {"count": count, "sum": total, "avg": total / count}[agg]
    elif is_hist:  # min, max of the points' min/max fields
        values[g, b] = col("hist_min" if agg == "min" else "hist_max")
    elif agg == "sum":  # each series' last value in the bucket, summed over the group
        row_bucket = (per_series.column("window_start_ns").to_numpy() - q.start_ns) // q.step_ns
        last = pc.fill_null(per_series.column("last"), np.nan).to_numpy()
        cell = group_of_row * n + row_bucket
        sums = np.bincount(cell, weights=last, minlength=n_groups * n)
        sums[np.bincount(cell, minlength=n_groups * n) == 0] = np.nan
        values[:] = sums.reshape(n_groups, n)
    elif agg == "avg":
        values[g, b] = col("sum") / col("count")
    elif agg == "count":
        values[g, b] = col("count")
    else:  # min, max, last (of the newest row of the bucket across the group)
        values[g, b] = col(agg)
    return values


# -- helpers ---------------------------------------------------------------------------------------


def _check_agg(metric: str, kind: str, agg: str) -> None:
    allowed = _ROLLUP_AGGS.get(kind)
    if allowed is None:
        raise QueryError(f"unknown metric type {kind!r}; accepted: {', '.join(_ROLLUP_AGGS)}")
    if agg in allowed:
        return
    if agg == "pNN" and kind in ("gauge", "sum", "summary"):
        raise QueryError(
            f"percentiles of {kind} {metric!r} need the raw tier: rollups keep count, sum, min, max "
            "and last of the values, not the values themselves"
        )
    shown = ", ".join(a if a != "pNN" else "percentiles pNN" for a in allowed)
    raise QueryError(f"agg {agg!r} is not defined for {kind} {metric!r}; accepted: {shown}")


def _check_no_overlap(rows: pa.Table) -> None:
    sid = rows.column("series_id").to_numpy()
    ws = rows.column("window_start_ns").to_numpy()
    wn = rows.column("window_ns").to_numpy()
    order = np.lexsort((ws, sid))
    sid, ws, wn = sid[order], ws[order], wn[order]
    same_window = (ws[1:] == ws[:-1]) & (wn[1:] == wn[:-1])  # parts of one window: merged, fine
    bad = np.flatnonzero((sid[1:] == sid[:-1]) & (ws[1:] < ws[:-1] + wn[:-1]) & ~same_window)
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"rollup rows of series {int(sid[i])} overlap: the window at {int(ws[i])} ({int(wn[i])} ns) "
            f"and the one at {int(ws[i + 1])}; give each time span from one tier only"
        )


def _percentiles(merged: pa.Table, kind: str, quantile: float, metric: str) -> np.ndarray:
    if kind == "histogram":
        bounds = merged.column("bounds").to_pylist()
        mixed = pc.fill_null(merged.column("mixed_bounds"), False).to_numpy(zero_copy_only=False)
        present = [b for b in bounds if b is not None]
        distinct = sorted({tuple(b) for b in present})
        if mixed.any() or len(distinct) > 1:
            shown = f" ({list(distinct[0])} vs {list(distinct[1])})" if len(distinct) > 1 else ""
            raise QueryError(
                f"cannot merge explicit histograms of {metric!r}: bucket bounds differ inside the "
                f"range{shown}; group_by or match a label that separates them"
            )
        out = np.full(merged.num_rows, np.nan)
        counts = merged.column("bucket_counts").to_pylist()
        have = [i for i, c in enumerate(counts) if c is not None]
        if have:
            matrix = np.array([counts[i] for i in have], dtype=np.float64)
            out[have] = hist.quantile_explicit(distinct[0], matrix, quantile)
        return out
    out = np.full(merged.num_rows, np.nan)
    for i, row in enumerate(merged.to_pylist()):
        if row["exp_scale"] is None:
            continue
        h = hist.ExponentialHistogram(
            scale=row["exp_scale"],
            zero_count=row["exp_zero_count"],
            positive_offset=row["exp_positive_offset"],
            positive_counts=np.asarray(row["exp_positive_counts"] or [], np.int64),
            negative_offset=row["exp_negative_offset"],
            negative_counts=np.asarray(row["exp_negative_counts"] or [], np.int64),
        )
        out[i] = hist.quantile_exponential(h, quantile)
    return out
