"""Windowed aggregation: event-time windows across the series of a metric, emitted as new series.

:class:`Aggregation` is a stage of the receiver's processor chain. Each :class:`Rule` names a
metric, a window (``1m``), a slide (tumbling when equal to the window; sliding when smaller and
dividing it), the attributes to keep (``by``), the aggregations to compute and an allowed
lateness. For every closed window and every group of series with equal ``by`` values it emits a
gauge point ``<metric>.<agg>`` at the window's end (start time: the window's start), with the
``by`` attributes plus ``aggregation.window`` (e.g. ``"1m"``), so the results are queryable and
alertable like any other series.

**Time.** The watermark is the newest event time seen minus ``allowed_lateness``; ``tick(now)``
also raises it to ``now - allowed_lateness`` so quiet inputs still close windows. A window
``[start, end)`` closes when the watermark reaches ``end``. A point older than the oldest window
still open is *late*: it is counted in ``late_points`` and left out of every result, since the
windows it belonged to were already emitted. ``close()`` closes every window holding data.

**Aggregations.** The per-series window maths is :func:`otel_audio.store.rollup.rollup` (counter
resets, histogram increments), merged per group with :func:`~otel_audio.store.rollup.merge_rollups`:

- gauges and sums: ``count, sum, avg, min, max, last`` of the point values; ``increase`` (sums:
  under the store's reset rule, against each series' point before the window) and ``rate``
  (increase per second of window); ``pNN`` of the window's values (linear interpolation, as
  ``numpy.quantile``);
- histograms: ``count, sum, avg`` of the observations in the window (count and sum increases),
  ``min, max`` of the points' min/max fields, ``increase, rate`` of the observation count, ``pNN``
  of the merged bucket increments (explicit: interpolated within the bucket; exponential: the
  bucket estimate of :mod:`otel_audio.store.histograms`), ``last`` of the cumulative sum.

Results that do not exist (``increase`` of a gauge, a percentile of an empty histogram or of
explicit histograms whose bounds differ) are not emitted.

Example::

    agg = from_options({"rules": [{"metric": "audio.latency", "window": "1m", "by": ["service"],
                                   "aggs": ["avg", "p99"]}]})
    agg.bind_emit(store.process)
    agg.process(metric_batch)
    agg.tick(now_unix_nano)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    MetricType,
    Temporality,
    canonical_json,
    series_id,
)
from otel_audio.processors.units import duration_ns
from otel_audio.store import histograms as hist
from otel_audio.store.rollup import Carry, merge_rollups, rollup

WINDOW_ATTRIBUTE = "aggregation.window"
AGGS = ("avg", "min", "max", "count", "sum", "last", "rate", "increase")
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")
_SCOPE_NAME = "otel_audio.processors.aggregation"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME})
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


@dataclass
class _State:
    """What one rule keeps between batches."""

    points: pa.Table  # points not yet out of every open window, plus each series' newest older one
    series: dict[int, dict[str, Any]] = field(default_factory=dict)
    max_event_ns: int | None = None
    closed_through: int | None = None  # every window ending at or before this was emitted


class Aggregation:
    """Processor computing windowed aggregates of configured metrics (see the module docstring).

    Args:
        rules: the aggregations to compute.
    """

    name = "aggregation"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.late_points = 0
        self._states = [_State(POINTS_SCHEMA.empty_table()) for _ in self.rules]
        self._emit: Callable[[Batch], None] | None = None

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """Where results go: the processors after this one."""
        self._emit = emit

    def process(self, batch: Batch) -> None:
        if not isinstance(batch, MetricBatch) or batch.points.num_rows == 0:
            return
        for rule, state in zip(self.rules, self._states, strict=True):
            self._add(rule, state, batch)
            watermark = None if state.max_event_ns is None else state.max_event_ns - rule.lateness_ns
            self._close(rule, state, watermark)

    def tick(self, now_unix_nano: int) -> None:
        """Close windows by processing time: the watermark is at least ``now - allowed_lateness``."""
        for rule, state in zip(self.rules, self._states, strict=True):
            self._close(rule, state, now_unix_nano - rule.lateness_ns)

    def close(self) -> None:
        """Emit every window that holds data."""
        for rule, state in zip(self.rules, self._states, strict=True):
            self._close(rule, state, None, flush=True)

    # -- ingest --------------------------------------------------------------------------------

    def _add(self, rule: Rule, state: _State, batch: MetricBatch) -> None:
        series = batch.series.filter(pc.equal(batch.series.column("metric"), rule.metric))
        if series.num_rows == 0:
            return
        for row in series.to_pylist():
            state.series.setdefault(row["series_id"], row)
        ids = pa.array(list(state.series), pa.uint64())
        points = batch.points.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)
        points = points.filter(pc.is_in(points.column("series_id"), value_set=ids))
        if points.num_rows == 0:
            return
        t = points.column("time_unix_nano").to_numpy()
        if state.closed_through is not None:
            late = t < _oldest_open_start(rule, state.closed_through)
            self.late_points += int(late.sum())
            points = points.filter(pa.array(~late))
            if points.num_rows == 0:
                return
            t = t[~late]
        newest = int(t.max())
        state.max_event_ns = newest if state.max_event_ns is None else max(state.max_event_ns, newest)
        state.points = pa.concat_tables([state.points, points])

    # -- windows -------------------------------------------------------------------------------

    def _close(self, rule: Rule, state: _State, watermark: int | None, flush: bool = False) -> None:
        if state.points.num_rows == 0 or (watermark is None and not flush):
            return
        t = state.points.column("time_unix_nano").to_numpy()
        if state.closed_through is not None:
            t = t[t >= _oldest_open_start(rule, state.closed_through)]
        # the ends of the windows holding each point: its pane's end, then one slide after another
        pane_end = np.unique(np.floor_divide(t, rule.slide_ns) * rule.slide_ns + rule.slide_ns)
        steps = rule.window_ns // rule.slide_ns
        ends = np.unique((pane_end[:, None] + rule.slide_ns * np.arange(steps)[None, :]).ravel())
        if state.closed_through is not None:
            ends = ends[ends > state.closed_through]
        if not flush:
            ends = ends[ends <= watermark]
        if ends.size == 0:
            return
        batches = [self._window(rule, state, int(end) - rule.window_ns, int(end)) for end in ends]
        state.closed_through = int(ends[-1])
        self._prune(rule, state)
        batch = _concat(batches)
        if self._emit is not None and batch.points.num_rows:
            self._emit(batch)

    def _window(self, rule: Rule, state: _State, start: int, end: int) -> MetricBatch:
        """The results of one window, every group."""
        pts = state.points
        t = pts.column("time_unix_nano").to_numpy()
        inside = (t >= start) & (t < end)
        if not inside.any():
            return _concat([])
        before = np.flatnonzero(t < start)
        carry = Carry(pts.take(_newest_per_series(pts, before)))
        series = pa.Table.from_pylist(list(state.series.values()), schema=SERIES_SCHEMA)
        window_pts = pts.filter(pa.array(inside))
        rows, _ = rollup(window_pts, series, rule.slide_ns, carry)
        if rows.num_rows == 0:
            return _concat([])
        rows = merge_rollups(rows, rule.window_ns, start)
        keys = [_group_key(state.series[sid], rule.by) for sid in rows.column("series_id").to_pylist()]
        groups = sorted(set(keys))
        index = {k: i for i, k in enumerate(groups)}
        gid = np.array([index[k] for k in keys], np.uint64)
        by_series = dict(zip(rows.column("series_id").to_pylist(), gid.tolist(), strict=True))
        grouped = merge_rollups(
            rows.set_column(0, "series_id", pa.array(gid, pa.uint64())), rule.window_ns, start
        )
        kind = state.series[next(iter(state.series))]["type"]
        values_by_group = _values_by_group(window_pts, by_series)
        out_series, out_points = [], []
        for row in grouped.to_pylist():
            key = groups[row["series_id"]]
            results = _results(rule, kind, row, values_by_group.get(row["series_id"]), end - start)
            for agg, value in results.items():
                if value is None or not math.isfinite(value):
                    continue
                srow = _series_row(rule, agg, key)
                out_series.append(srow)
                out_points.append(
                    {
                        "series_id": srow["series_id"],
                        "time_unix_nano": end,
                        "start_time_unix_nano": start,
                        "value": float(value),
                        "flags": 0,
                    }
                )
        return MetricBatch(
            points=pa.Table.from_pylist(out_points, schema=POINTS_SCHEMA),
            series=pa.Table.from_pylist(out_series, schema=SERIES_SCHEMA),
            exemplars=EXEMPLARS_SCHEMA.empty_table(),
        )

    def _prune(self, rule: Rule, state: _State) -> None:
        """Drop points no open window needs, keeping each series' newest older one (its carry)."""
        assert state.closed_through is not None
        pts = state.points
        t = pts.column("time_unix_nano").to_numpy()
        old = t < _oldest_open_start(rule, state.closed_through)
        keep = ~old
        keep[_newest_per_series(pts, np.flatnonzero(old))] = True
        state.points = pts.filter(pa.array(keep))


# -- results ---------------------------------------------------------------------------------------


def _results(rule: Rule, kind: str, row: dict[str, Any], values: np.ndarray | None, width_ns: int):
    """Every aggregation of one group's merged rollup row."""
    is_hist = kind in (MetricType.HISTOGRAM.value, MetricType.EXPONENTIAL_HISTOGRAM.value)
    if is_hist:
        count, total = row["increase"], row["sum_increase"]
        low, high = row["hist_min"], row["hist_max"]
    else:
        count, total, low, high = row["count"], row["sum"], row["min"], row["max"]
    out: dict[str, float | None] = {}
    for agg in rule.aggs:
        match = _PERCENTILE.fullmatch(agg)
        if match:
            q = float(match.group(1)) / 100
            out[agg] = _histogram_quantile(row, q) if is_hist else _values_quantile(values, q)
        elif agg == "avg":
            out[agg] = total / count if count else None
        elif agg in ("count", "sum", "min", "max", "last", "increase"):
            out[agg] = {"count": count, "sum": total, "min": low, "max": high}.get(agg, row.get(agg))
        elif agg == "rate":
            out[agg] = None if row["increase"] is None else row["increase"] / (width_ns / 1e9)
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


def _values_by_group(points: pa.Table, by_series: dict[int, int]) -> dict[int, np.ndarray]:
    """Each group's point values in the window (points without a recorded value left out)."""
    sid = points.column("series_id").to_numpy()
    v = pc.fill_null(points.column("value"), np.nan).to_numpy()
    flags = pc.fill_null(points.column("flags"), 0).to_numpy()
    ok = ~np.isnan(v) & ((flags & 1) == 0)
    gid = np.array([by_series.get(int(s), -1) for s in sid], np.int64)
    return {g: v[ok & (gid == g)] for g in set(by_series.values())}


def _group_key(row: dict[str, Any], by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The ``by`` labels of a series, resolved as the query engine resolves labels."""
    attrs = json.loads(row["attributes"] or "{}")
    resource = json.loads(row["resource"] or "{}")
    out = []
    for key in by:
        value: Any = attrs.get(key, resource.get(key))
        if value is None and key == "service":
            value = row["service"] or ""
        if value is None:
            value = ""
        out.append((key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)))
    return tuple(out)


def _series_row(rule: Rule, agg: str, key: tuple[tuple[str, str], ...]) -> dict[str, Any]:
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


# -- helpers ---------------------------------------------------------------------------------------


def _oldest_open_start(rule: Rule, closed_through: int) -> int:
    return closed_through - rule.window_ns + rule.slide_ns


def _newest_per_series(points: pa.Table, rows: np.ndarray) -> np.ndarray:
    """Of the given row positions, the one with the newest time per series."""
    if rows.size == 0:
        return rows
    sid = points.column("series_id").to_numpy()[rows]
    t = points.column("time_unix_nano").to_numpy()[rows]
    order = np.lexsort((t, sid))
    last = np.r_[sid[order][1:] != sid[order][:-1], True]
    return rows[order[last]]


def _concat(batches: Sequence[MetricBatch]) -> MetricBatch:
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


# -- options ---------------------------------------------------------------------------------------


def parse_duration(value: Any, option: str) -> int:
    """Nanoseconds of a duration like ``"30s"``, ``"1m"``, ``"500ms"``, ``"1h"``."""
    try:
        return duration_ns(value if isinstance(value, str) else "", option)
    except ValueError:
        _require(False, option, value, "a duration like '500ms', '30s', '1m', '1h', '1d'")
        raise


def from_options(options: dict[str, Any] | None) -> Aggregation:
    """Build an :class:`Aggregation` from the receiver config's ``aggregation`` options.

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
    return Aggregation([_rule(item, f"rules[{i}]") for i, item in enumerate(rules)])


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
        match = _PERCENTILE.fullmatch(agg) if isinstance(agg, str) else None
        ok = agg in AGGS or (match is not None and 0 < float(match.group(1)) < 100)
        _require(ok, f"{where}.aggs[{i}]", agg, f"one of {', '.join(AGGS)} or a percentile p1..p99.9")
    return Rule(metric, window, slide, tuple(by), tuple(dict.fromkeys(aggs)), lateness, window_label)


def _require(ok: bool, option: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"aggregation option {option}: expected {accepted}, got {value!r}")
