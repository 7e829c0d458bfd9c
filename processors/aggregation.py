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

**State.** Windows are cut into panes of one slide (a tumbling window is one pane). Per rule the
processor keeps, for the windows still open (those ending after the last emitted one, so at most
``(window + allowed_lateness) / slide + 1`` panes): the raw points (gauge percentiles read them,
and a late point means its pane is rolled up again), one rollup row per series and pane once a
window has needed the pane (so a point of a 5 m window sliding by 1 m is rolled up once, not five
times), and the set of panes holding points; plus each series' newest older point, the previous
point of its next counter increment. Per series ever seen: its row and its group; per emitted
series: its row. So memory is about ``points/s x (window + lateness)`` plus the series, whatever
the run's length; :meth:`Aggregation.held_points` reports the raw points held. Points flagged as
having no recorded value (and gauge or sum points whose value is NaN) are dropped on arrival
(after the lateness check, and counted in the watermark): no aggregation reads them, and a
counter's increment is taken against its series' previous point that has a value.

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

**Modules.** This module keeps the windows (ingest, panes, watermark, closing). The options are
validated into :class:`Rule` by :mod:`otel_audio.processors.aggregation_options`; a closed
window's aggregates, and the series and points they are emitted as, are computed by
:mod:`otel_audio.processors.aggregation_results`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.aggregation_options import (
    AGGS,
    PERCENTILE,
    WINDOW_ATTRIBUTE,
    Rule,
    parse_duration,
    parse_rules,
)
from otel_audio.processors.aggregation_results import (
    HISTOGRAM_TYPES,
    concat_batches,
    group_results,
    points_table,
    series_row,
    sorted_quantiles,
)
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
)
from otel_audio.store.rollup import Carry, merge_rollups, rollup

__all__ = ["AGGS", "WINDOW_ATTRIBUTE", "Aggregation", "Rule", "from_options", "parse_duration"]

_FEW_GROUPS = 64  # up to this many groups, percentiles are taken group by group (no sort of the window)


@dataclass
class _State:
    """What one rule keeps between batches (see **State** in the module docstring)."""

    carry: pa.Table  # each series' newest point older than every open window
    panes: dict[int, list[pa.Table]] = field(default_factory=dict)  # pane start -> its points
    pane_rows: dict[int, pa.Table] = field(default_factory=dict)  # pane start -> its rollup rows
    pane_values: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # -> group key -> values
    carry_at: dict[int, Carry] = field(default_factory=dict)  # time -> newest point per series before it
    series: dict[int, dict[str, Any]] = field(default_factory=dict)
    series_table: pa.Table = field(default_factory=SERIES_SCHEMA.empty_table)
    known: pa.Array = field(default_factory=lambda: pa.array([], pa.uint64()))
    sorted_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    key_by_sorted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # key of each id
    plain_by_sorted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # gauge or sum
    keys: list[tuple[tuple[str, str], ...]] = field(default_factory=list)  # group keys, first seen first
    key_index: dict[tuple[tuple[str, str], ...], int] = field(default_factory=dict)
    out_rows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (agg, key) -> row
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

    def held_points(self) -> int:
        """Raw points kept for windows still open (and as each series' previous point), all rules."""
        return sum(
            state.carry.num_rows + sum(t.num_rows for tables in state.panes.values() for t in tables)
            for state in self._states
        )

    def close(self) -> None:
        """Emit every window that holds data."""
        for rule, state in zip(self.rules, self._states, strict=True):
            self._close(rule, state, None, flush=True)

    # -- ingest --------------------------------------------------------------------------------

    def _add(self, rule: Rule, state: _State, batch: MetricBatch) -> None:
        series = batch.series.filter(pc.equal(batch.series.column("metric"), rule.metric))
        if series.num_rows == 0:
            return
        ids = series.column("series_id").to_numpy()
        if not state.series.keys() >= set(ids.tolist()):
            _register(rule, state, series)
        points = batch.points
        if not points.schema.equals(POINTS_SCHEMA):
            points = points.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)
        ours = pc.is_in(points.column("series_id"), value_set=state.known)
        if not pc.all(ours).as_py():  # a batch of one metric (the usual case) is taken whole
            points = points.filter(ours)
            if points.num_rows == 0:
                return
        t = points.column("time_unix_nano").to_numpy()
        if state.closed_through is not None:
            late = t < _oldest_open_start(rule, state.closed_through)
            if late.any():
                self.late_points += int(late.sum())
                points = points.filter(pa.array(~late))
                if points.num_rows == 0:
                    return
                t = t[~late]
        newest = int(t.max())
        state.max_event_ns = newest if state.max_event_ns is None else max(state.max_event_ns, newest)
        # points no aggregation reads are dropped now, so each series' newest held point is the
        # previous point its next increment is taken against
        unused = _unvalued(state, points)
        if unused is not None:
            points = points.filter(pa.array(~unused))
            t = t[~unused]
            if points.num_rows == 0:
                return
        slide = rule.slide_ns
        first, last = int(t.min()) // slide * slide, int(t.max()) // slide * slide
        if first == last:
            state.panes.setdefault(first, []).append(points)
        else:
            pane = t // slide * slide
            for start in np.unique(pane).tolist():
                state.panes.setdefault(start, []).append(points.filter(pa.array(pane == start)))
        # what was derived from the panes from ``first`` on, or from the points before a later time
        for derived in (state.pane_rows, state.pane_values):
            for start in [p for p in derived if p >= first]:
                del derived[start]
        for start in [p for p in state.carry_at if p > first]:
            del state.carry_at[start]

    # -- windows -------------------------------------------------------------------------------

    def _close(self, rule: Rule, state: _State, watermark: int | None, flush: bool = False) -> None:
        if not state.panes or (watermark is None and not flush):
            return
        slide = rule.slide_ns
        if not flush:  # window ends are multiples of the slide: is the next one reached yet?
            first_open = min(state.panes) if state.closed_through is None else state.closed_through
            if watermark < first_open + slide:
                return
        steps = rule.window_ns // slide
        # the ends of the windows holding each pane: its own end, then one slide after another
        ends = sorted({pane + slide * k for pane in state.panes for k in range(1, steps + 1)})
        if state.closed_through is not None:
            ends = [e for e in ends if e > state.closed_through]
        if not flush:
            ends = [e for e in ends if e <= watermark]
        if not ends:
            return
        batches = [self._window(rule, state, end - rule.window_ns, end) for end in ends]
        state.closed_through = ends[-1]
        _prune(rule, state)
        batch = concat_batches(batches)
        if self._emit is not None and batch.points.num_rows:
            self._emit(batch)

    def _window(self, rule: Rule, state: _State, start: int, end: int) -> MetricBatch:
        """The results of one window, every group."""
        panes = [p for p in range(start, end, rule.slide_ns) if p in state.panes]
        if not panes:
            return concat_batches([])
        for pane in panes:
            if pane not in state.pane_rows:
                _roll_pane(rule, state, pane)
        rows = pa.concat_tables([state.pane_rows[p] for p in panes])
        if rows.num_rows == 0:
            return concat_batches([])
        rows = merge_rollups(rows, rule.window_ns, start)
        row_keys = state.key_by_sorted[np.searchsorted(state.sorted_ids, rows.column("series_id").to_numpy())]
        present = np.unique(row_keys)
        groups = present[sorted(range(present.size), key=lambda i: state.keys[present[i]])]
        gid_of_key = np.full(len(state.keys), -1, np.int64)
        gid_of_key[groups] = np.arange(groups.size)
        grouped = merge_rollups(
            rows.set_column(0, "series_id", pa.array(gid_of_key[row_keys].astype(np.uint64))),
            rule.window_ns,
            start,
        )
        kind = state.series[next(iter(state.series))]["type"]
        percentiles = kind not in HISTOGRAM_TYPES and any(PERCENTILE.fullmatch(a) for a in rule.aggs)
        many = percentiles and groups.size > _FEW_GROUPS
        quantiles = _quantiles_by_key(state, panes, rule.aggs) if many else {}
        sids, results, out_series = [], [], {}
        for row in grouped.to_pylist():
            key_id = int(groups[row["series_id"]])
            values = _window_values(state, panes, key_id) if percentiles and not many else None
            found = group_results(rule, kind, row, values, end - start, quantiles.get(key_id))
            for agg, value in found.items():
                if value is None or not math.isfinite(value):
                    continue
                srow = state.out_rows.get((agg, key_id))
                if srow is None:
                    srow = state.out_rows[(agg, key_id)] = series_row(rule, agg, state.keys[key_id])
                out_series.setdefault(srow["series_id"], srow)
                sids.append(srow["series_id"])
                results.append(float(value))
        return MetricBatch(
            points=points_table(sids, [end] * len(sids), [start] * len(sids), results),
            series=pa.Table.from_pylist(list(out_series.values()), schema=SERIES_SCHEMA),
            exemplars=EXEMPLARS_SCHEMA.empty_table(),
        )


def _prune(rule: Rule, state: _State) -> None:
    """Drop the panes no open window holds, folding their newest point per series into the carry."""
    assert state.closed_through is not None
    oldest = _oldest_open_start(rule, state.closed_through)
    if any(p < oldest for p in state.panes):
        state.carry = _carry_before(state, oldest).points
        for pane in [p for p in state.panes if p < oldest]:
            del state.panes[pane]
            state.pane_rows.pop(pane, None)
            state.pane_values.pop(pane, None)
    state.carry_at = {p: c for p, c in state.carry_at.items() if p >= oldest}


def _register(rule: Rule, state: _State, series: pa.Table) -> None:
    """Remember the series of ``series`` not seen before, with their groups."""
    for row in series.to_pylist():
        if row["series_id"] in state.series:
            continue
        state.series[row["series_id"]] = row
        key = _group_key(row, rule.by)
        if key not in state.key_index:
            state.key_index[key] = len(state.keys)
            state.keys.append(key)
    ids = np.fromiter(state.series, np.uint64, len(state.series))
    order = np.argsort(ids)
    rows = list(state.series.values())
    state.sorted_ids = ids[order]
    state.key_by_sorted = np.array([state.key_index[_group_key(rows[i], rule.by)] for i in order], np.int64)
    state.plain_by_sorted = np.array([rows[i]["type"] not in HISTOGRAM_TYPES for i in order], bool)
    state.known = pa.array(ids, pa.uint64())
    state.series_table = pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)


def _unvalued(state: _State, points: pa.Table) -> np.ndarray | None:
    """Which points carry no value any aggregation reads (flagged, or a gauge or sum's NaN); None: none."""
    flags = points.column("flags")
    unused = None
    if flags.null_count < len(flags):
        bit = pc.fill_null(flags, 0).to_numpy() & 1
        if bit.any():
            unused = bit.astype(bool)
    v = pc.fill_null(points.column("value"), np.nan).to_numpy()
    nan = np.isnan(v)
    if nan.any():
        sid = points.column("series_id").to_numpy()
        nan &= state.plain_by_sorted[np.searchsorted(state.sorted_ids, sid)]
        unused = nan if unused is None else unused | nan
    return unused if unused is not None and unused.any() else None


def _roll_pane(rule: Rule, state: _State, pane: int) -> None:
    """The rollup rows of one pane, each series' first increment against its previous point."""
    points = pa.concat_tables(state.panes[pane])
    rows, carry = rollup(points, state.series_table, rule.slide_ns, _carry_before(state, pane))
    state.pane_rows[pane] = rows
    state.carry_at[pane + rule.slide_ns] = carry


def _carry_before(state: _State, time_ns: int) -> Carry:
    """The newest held point of each series older than ``time_ns``."""
    cached = state.carry_at.get(time_ns)
    if cached is not None:
        return cached
    known = [p for p in state.carry_at if p < time_ns]
    since = max(known, default=None)
    base = state.carry if since is None else state.carry_at[since].points
    tables = [base] + [
        table
        for pane in sorted(state.panes)
        if pane < time_ns and (since is None or pane >= since)
        for table in state.panes[pane]
    ]
    points = pa.concat_tables(tables)
    carry = Carry(points.take(_newest_per_series(points, np.arange(points.num_rows))))
    state.carry_at[time_ns] = carry
    return carry


def _window_values(state: _State, panes: list[int], key_id: int) -> np.ndarray:
    """The point values of group ``key_id`` in the given panes (held points all have a value)."""
    parts = []
    for pane in panes:
        by_key = state.pane_values.get(pane)
        if by_key is None:
            points = pa.concat_tables(state.panes[pane])
            sid = points.column("series_id").to_numpy()
            v = points.column("value").to_numpy()
            key = state.key_by_sorted[np.searchsorted(state.sorted_ids, sid)]
            order = np.argsort(key, kind="stable")
            cuts = np.flatnonzero(np.diff(key[order])) + 1
            by_key = state.pane_values[pane] = {
                int(key[chunk[0]]): v[chunk] for chunk in np.split(order, cuts) if chunk.size
            }
        if key_id in by_key:
            parts.append(by_key[key_id])
    return np.concatenate(parts) if parts else np.zeros(0)


def _quantiles_by_key(state: _State, panes: list[int], aggs: Sequence[str]) -> dict[int, dict[str, float]]:
    """Every group's percentiles of its point values in the panes, all groups in one sort."""
    points = pa.concat_tables([t for pane in panes for t in state.panes[pane]])
    keys = state.key_by_sorted[np.searchsorted(state.sorted_ids, points.column("series_id").to_numpy())]
    values = points.column("value").to_numpy()
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, keys.size])
    columns = {}
    for agg in aggs:
        match = PERCENTILE.fullmatch(agg)
        if match:
            columns[agg] = sorted_quantiles(values, starts, counts, float(match.group(1)) / 100).tolist()
    return {
        key: {agg: column[i] for agg, column in columns.items()}
        for i, key in enumerate(keys[starts].tolist())
    }


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


# -- options ---------------------------------------------------------------------------------------


def from_options(options: dict[str, Any] | None) -> Aggregation:
    """Build an :class:`Aggregation` from the receiver config's ``aggregation`` options.

    Keys: ``rules``, a non-empty list of maps with ``metric`` (required), ``window`` (default
    ``1m``), ``slide`` (default the window), ``by`` (default none), ``aggs`` (default ``[avg]``),
    ``allowed_lateness`` (default ``0s``); parsed by
    :func:`otel_audio.processors.aggregation_options.parse_rules`.

    Raises:
        ValueError: naming the option that is wrong and what it accepts.
    """
    return Aggregation(parse_rules(options))
