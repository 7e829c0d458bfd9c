"""The ingest side of alert evaluation: shared sliding windows of every watched metric's points.

:class:`Windows` keeps, for every metric some condition reads, the points of the last *longest
window* of its leaves (a leaf is one ``function(selector, window)`` of a condition; two rules on
``avg(x, 5m)`` share one). :meth:`Windows.observe` takes each ingest batch: it picks the points of
watched metrics with Arrow (other metrics cost one ``is_in``), turns each into its increment
under the store's reset rule (:func:`otel_audio.store.rollup.rollup` with a 1 ns window and a
carry: the increments the query API and the rollup tiers use), and appends them per metric,
sorted by time. Nothing is read from the store.

The points are kept per metric in columns (arrays of time, series index, value, increment, ...)
rather than in a deque per series: one numpy pass then serves every series of the metric. Because
each point's increment is taken on arrival against the previous point of its series (the carry),
no point before the window is kept for ``rate`` or ``increase``; points older than the metric's
longest window are dropped as newer ones arrive, so memory is bounded by the windows.

:meth:`Windows.values` reads a leaf at a time ``now`` with
:func:`~otel_audio.processors.alerting.functions.compute` and caches the result per
``(metric, function, window, now)`` until the next batch, so 1,000 rules over the same metrics
cost one pass per distinct leaf. The conditions themselves (and/or/not over leaves) are evaluated
by :class:`~otel_audio.processors.alerting.evaluate.Evaluator`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.alerting.functions import HISTOGRAM_KINDS, NO_VALUES, POINTS, Frame, compute
from otel_audio.processors.alerting.grammar import (
    DEFAULT_WINDOW_NS,
    Absent,
    Anomaly,
    Call,
    Compare,
    Condition,
    Not,
    Selector,
    percentile,
)
from otel_audio.processors.alerting.model import matches_all
from otel_audio.processors.base import SERIES_SCHEMA, MetricBatch
from otel_audio.store import histograms as hist
from otel_audio.store.rollup import Carry, rollup

NEVER = np.iinfo(np.int64).max  # "born" of a point that has a predecessor: its increment always counts
_ROW_COLUMNS = ("count", "sum", "min", "max", "last", "increase", "sum_increase", "hist_min", "hist_max")
_CACHE_SIZE = 65536  # leaf results kept between batches
_MAX_CHUNKS = 16  # batches a metric keeps apart before joining them into one array


@dataclass(frozen=True)
class Leaf:
    """One windowed read of a condition: ``func`` of each series of ``selector`` over ``window_ns``."""

    func: str
    selector: Selector
    window_ns: int


def leaf_of(node: Compare | Absent) -> Leaf:
    """The leaf a comparison or ``absent`` reads (bare selectors and ``anomaly``: ``last`` over 5m)."""
    if isinstance(node, Absent):
        return Leaf(POINTS, node.selector, node.window_ns)
    operand = node.operand
    if isinstance(operand, Call):
        return Leaf(operand.func, operand.selector, operand.window_ns)
    if isinstance(operand, Anomaly):
        return Leaf("last", operand.score_selector(), DEFAULT_WINDOW_NS)
    return Leaf("last", operand, DEFAULT_WINDOW_NS)


def leaves(condition: Condition) -> list[Leaf]:
    """Every leaf of ``condition``, left to right."""
    if isinstance(condition, Compare | Absent):
        return [leaf_of(condition)]
    if isinstance(condition, Not):
        return leaves(condition.operand)
    return leaves(condition.left) + leaves(condition.right)


class MetricPoints:
    """The series of one metric and their points of the last longest window, sorted by time."""

    def __init__(self, bounds: list[np.ndarray]) -> None:
        self.kind: str | None = None  # the first-seen series' type; series of other types are ignored
        self.labels: list[dict[str, str]] = []
        self.keys: list[tuple] = []
        self.lookups: list[dict[str, str]] = []
        self.chunks: list[dict[str, np.ndarray]] = []
        self.entries: list[dict[str, np.ndarray]] = []  # histogram bucket increments, any order
        self.bounds = bounds  # explicit bucket bounds by layout id, shared by all metrics
        self.newest = np.iinfo(np.int64).min
        self.longest = 0
        self.buckets = False  # some leaf reads percentiles: keep bucket increments
        self._matches: dict[tuple, np.ndarray] = {}
        self._keys = self._labels = np.empty(0, object)  # keys and labels as arrays, for found()
        self._rank = np.zeros(0, np.int64)  # each series' place in the order of label sets

    def add_series(self, row: dict[str, Any]) -> int:
        resource = json.loads(row["resource"] or "{}")
        attrs = json.loads(row["attributes"] or "{}")
        lookup = {k: _label_str(v) for k, v in resource.items()}
        lookup.update((k, _label_str(v)) for k, v in attrs.items())
        lookup.setdefault("service", row["service"] or "")
        labels = {k: v for k, v in lookup.items() if v != "" and not (k == "service.name" and k not in attrs)}
        self.lookups.append(lookup)
        self.labels.append(labels)
        self.keys.append(tuple(sorted(labels.items())))
        return len(self.labels) - 1

    def found(self, sidx: np.ndarray, values: np.ndarray) -> dict[tuple, tuple[dict[str, str], float]]:
        """{label key: (labels, value)} of series ``sidx``; the first series wins a shared label set."""
        if len(self._keys) < len(self.keys):
            self._keys = np.empty(len(self.keys), object)
            self._keys[:] = self.keys
            self._labels = np.empty(len(self.labels), object)
            self._labels[:] = self.labels
        rev = sidx[::-1]
        return dict(
            zip(self._keys[rev], zip(self._labels[rev], values[::-1].tolist(), strict=True), strict=True)
        )

    def by_labels(self, sidx: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sidx`` and ``values`` ordered by label set, one series per label set (the first seen)."""
        if self._rank.size < len(self.keys):  # new series: rank every label set again
            self._rank = np.empty(len(self.keys), np.int64)
            previous, rank = None, -1
            for i in sorted(range(len(self.keys)), key=self.keys.__getitem__):
                rank += self.keys[i] != previous
                self._rank[i], previous = rank, self.keys[i]
        rank = self._rank[sidx]
        order = np.lexsort((sidx, rank))
        rank = rank[order]
        first = np.r_[True, rank[1:] != rank[:-1]]
        return sidx[order][first], values[order][first]

    def matching(self, selector: Selector) -> np.ndarray:
        """Which series match the selector's matchers (cached, extended as series arrive)."""
        known = self._matches.get(selector.matchers, np.zeros(0, bool))
        if known.size < len(self.lookups):
            more = [matches_all(selector.matchers, lk) for lk in self.lookups[known.size :]]
            known = np.r_[known, np.array(more, bool)]
            self._matches[selector.matchers] = known
        return known

    def append(self, chunk: dict[str, np.ndarray], entries: dict[str, np.ndarray] | None) -> None:
        if len(self.chunks) >= _MAX_CHUNKS:  # many small batches: one array, trimmed below
            self.points()
        self.chunks.append(chunk)
        if entries is not None and entries["t"].size:
            self.entries.append(entries)
        self.newest = max(self.newest, int(chunk["t"].max()))
        cutoff = self.newest - self.longest
        self.chunks = [c for c in self.chunks if c["t"][-1] > cutoff]
        self.entries = [e for e in self.entries if e["t"].max() > cutoff]
        if self.chunks:
            first = self.chunks[0]
            drop = int(np.searchsorted(first["t"], cutoff, side="right"))
            if drop * 2 > first["t"].size:  # copy, so the dropped points' memory goes
                self.chunks[0] = {k: v[drop:].copy() for k, v in first.items()}

    def points(self) -> dict[str, np.ndarray]:
        """All kept points as one chunk sorted by time (stable: arrival order among equal times)."""
        if len(self.chunks) != 1:
            merged = {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}
            t = merged["t"]
            if t.size > 1 and (np.diff(t) < 0).any():
                order = np.argsort(t, kind="stable")
                merged = {k: v[order] for k, v in merged.items()}
            self.chunks = [merged]
        return self.chunks[0]

    def held(self) -> int:
        return sum(c["t"].size for c in self.chunks)


def _label_str(value: Any) -> str:
    """Attribute values as label strings, as the query API reads them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Windows:
    """The shared keeper of every watched metric's recent points, fed batch by batch.

    Conditions register their leaves with :meth:`watch` (an :class:`Evaluator` does it); only
    metrics some leaf reads are kept, each for the longest window among its leaves. Points that
    arrive older than their series' newest point are dropped (the store's rollups do the same),
    and so are points flagged "no recorded value" and gauge or sum points whose value is NaN.
    """

    def __init__(self) -> None:
        self._leaves: Counter[Leaf] = Counter()
        self._metrics: dict[str, MetricPoints] = {}
        self._series = SERIES_SCHEMA.empty_table()  # every watched series seen: rollup's type lookup
        self._carry = Carry.empty()
        self._sids = np.zeros(0, np.uint64)  # sorted ids of known series ...
        self._where = np.zeros((0, 4), np.int64)  # ... and their (metric number, index, history, delta)
        self._names: list[str] = []  # metric number -> name
        self._layouts: dict[tuple, int] = {}  # explicit bucket bounds -> layout id
        self._bounds: list[np.ndarray] = []  # layout id -> bounds
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._frames: dict[tuple, Frame] = {}

    # -- registration ---------------------------------------------------------------------------

    def watch(self, condition: Condition) -> None:
        """Keep the windows ``condition`` reads (points before this call are not there)."""
        for leaf in leaves(condition):
            self._leaves[leaf] += 1
        self._refresh()

    def unwatch(self, condition: Condition) -> None:
        """Release what :meth:`watch` took; metrics no condition reads any more are dropped."""
        for leaf in leaves(condition):
            self._leaves[leaf] -= 1
        self._leaves = +self._leaves
        self._refresh()

    def _refresh(self) -> None:
        wanted: dict[str, tuple[int, bool]] = {}
        for leaf in self._leaves:
            longest, buckets = wanted.get(leaf.selector.metric, (0, False))
            wanted[leaf.selector.metric] = (
                max(longest, leaf.window_ns),
                buckets or percentile(leaf.func) is not None,
            )
        for name in list(self._metrics):
            if name not in wanted:
                del self._metrics[name]
                if name in self._names:  # its series register afresh if it is watched again
                    kept = self._where[:, 0] != self._names.index(name)
                    gone = pa.array(self._sids[~kept], pa.uint64())
                    self._sids, self._where = self._sids[kept], self._where[kept]
                    # ... and forget their newest points, or points read again later would be late
                    carried = self._carry.points
                    keep = pc.invert(pc.is_in(carried.column("series_id"), value_set=gone))
                    self._carry = Carry(carried.filter(keep))
        for name, (longest, buckets) in wanted.items():
            metric = self._metrics.setdefault(name, MetricPoints(self._bounds))
            metric.longest, metric.buckets = longest, buckets
        self._watched = pa.array(sorted(wanted), pa.string())
        self._cache.clear()
        self._frames.clear()

    @property
    def metrics(self) -> frozenset[str]:
        """The metric names some watched condition reads."""
        return frozenset(self._metrics)

    def held_points(self) -> int:
        """Points kept in all windows (memory is bounded by each metric's longest window)."""
        return sum(m.held() for m in self._metrics.values())

    def metric(self, name: str) -> MetricPoints | None:
        return self._metrics.get(name)

    # -- ingest ---------------------------------------------------------------------------------

    def observe(self, batch: MetricBatch) -> set[str]:
        """Add the batch's points of watched metrics; returns the names of the metrics it touched."""
        if not self._metrics or batch.points.num_rows == 0:
            return set()
        series = batch.series
        series = series.filter(pc.is_in(series.column("metric"), value_set=self._watched))
        if series.num_rows == 0:
            return set()
        self._register(series)
        sid = batch.points.column("series_id").to_numpy()
        pos = np.minimum(np.searchsorted(self._sids, sid), self._sids.size - 1)
        keep = (self._sids[pos] == sid) & (self._where[pos, 0] >= 0)
        if not keep.any():
            return set()
        points = batch.points if keep.all() else batch.points.filter(pa.array(keep))
        rows, self._carry = rollup(points, self._series, 1, self._carry)
        if rows.num_rows == 0:
            return set()
        self._cache.clear()
        self._frames.clear()
        return self._append(rows)

    def _register(self, series: pa.Table) -> None:
        ids = series.column("series_id").to_numpy()
        pos = np.minimum(np.searchsorted(self._sids, ids), max(self._sids.size - 1, 0))
        new = ~(self._sids[pos] == ids) if self._sids.size else np.ones(ids.size, bool)
        if not new.any():
            return
        rows = series.filter(pa.array(new))
        _, first = np.unique(rows.column("series_id").to_numpy(), return_index=True)
        rows = rows.take(np.sort(first))
        where = []
        for row in rows.to_pylist():
            metric = self._metrics[row["metric"]]
            metric.kind = metric.kind or row["type"]
            if row["type"] != metric.kind:
                where.append((-1, -1, 0, 0))
                continue
            if row["metric"] not in self._names:
                self._names.append(row["metric"])
            delta = row["temporality"] == "delta"
            where.append((self._names.index(row["metric"]), metric.add_series(row), 0, delta))
        self._series = pa.concat_tables([self._series, rows.select(SERIES_SCHEMA.names).cast(SERIES_SCHEMA)])
        sids = np.r_[self._sids, rows.column("series_id").to_numpy()]
        table = np.r_[self._where, np.array(where, np.int64).reshape(-1, 4)]
        order = np.argsort(sids, kind="stable")
        self._sids, self._where = sids[order], table[order]

    def _append(self, rows: pa.Table) -> set[str]:
        """Split the rollup's per-point rows (sorted by series) into each metric's time-sorted chunk."""
        sid = rows.column("series_id").to_numpy()
        pos = np.searchsorted(self._sids, sid)
        where = self._where[pos]
        first = np.r_[True, sid[1:] != sid[:-1]] & (where[:, 2] == 0)  # no earlier point, ever
        self._where[pos, 2] = 1
        t = rows.column("last_time_ns").to_numpy()
        st = pc.fill_null(rows.column("last_start_time_ns"), 0).to_numpy()
        order = np.lexsort((t, where[:, 0]))
        metric_no, where = where[order, 0], where[order]
        cols = {
            "t": t[order],
            "s": where[:, 1],
            **{name: _floats(rows, name)[order] for name in _ROW_COLUMNS},
        }
        cols["born"] = np.where(first[order] & (where[:, 3] == 0), st[order], NEVER)
        cols["layout"] = np.full(order.size, -1, np.int64)
        buckets = np.array([self._keeps_buckets(name) for name in self._names], bool)[metric_no]
        entries = None
        if buckets.any():
            picked = np.flatnonzero(buckets)
            entries = self._bucket_entries(rows.take(order[picked]), picked, cols)
        starts = np.flatnonzero(np.r_[True, metric_no[1:] != metric_no[:-1]])
        touched = set()
        for lo, hi in zip(starts, np.r_[starts[1:], order.size], strict=True):
            name = self._names[metric_no[lo]]
            part = None
            if entries is not None:
                a, b = np.searchsorted(entries["at"], [lo, hi])
                part = {k: v[a:b] for k, v in entries.items()} if b > a else None
            self._metrics[name].append({k: v[lo:hi] for k, v in cols.items()}, part)
            touched.add(name)
        return touched

    def _keeps_buckets(self, name: str) -> bool:
        metric = self._metrics.get(name)
        return metric is not None and metric.buckets and metric.kind in HISTOGRAM_KINDS

    def _bucket_entries(self, rows: pa.Table, at: np.ndarray, cols: dict[str, np.ndarray]) -> dict:
        """Non-zero bucket increments of histogram ``rows`` (at positions ``at`` of ``cols``), by position.

        Explicit: ``category`` is the layout id of the point's bounds and ``index`` the bucket;
        exponential: ``category`` and ``index`` as in :mod:`otel_audio.store.histograms`.
        """
        kinds = np.asarray(rows.column("bounds").is_valid())
        parts = []
        explicit = np.flatnonzero(kinds)
        if explicit.size:
            for i, bounds in zip(explicit, rows.column("bounds").take(explicit).to_pylist(), strict=True):
                layout = self._layouts.setdefault(tuple(bounds), len(self._layouts))
                if layout == len(self._bounds):
                    self._bounds.append(np.asarray(bounds, np.float64))
                cols["layout"][at[i]] = layout
            owner, index, count = _list_column(rows, "bucket_counts")
            parts.append((owner, cols["layout"][at[owner]], index, count))
        for cat, side in ((hist.NEGATIVE, "negative"), (hist.POSITIVE, "positive")):
            owner, place, count = _list_column(rows, f"exp_{side}_counts")
            offset = pc.fill_null(rows.column(f"exp_{side}_offset"), 0).to_numpy().astype(np.int64)
            parts.append((owner, np.full(owner.size, cat), offset[owner] + place, count))
        exponential = np.flatnonzero(~kinds)
        zero = pc.fill_null(rows.column("exp_zero_count"), 0).to_numpy().astype(np.int64)[exponential]
        parts.append(
            (exponential, np.full(exponential.size, hist.ZERO), np.zeros(exponential.size, np.int64), zero)
        )
        owner, category, index, count = (np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True))
        scale = pc.fill_null(rows.column("exp_scale"), 0).to_numpy().astype(np.int64)
        keep = count > 0
        owner, category, index, count = owner[keep], category[keep], index[keep], count[keep]
        by_position = np.argsort(at[owner], kind="stable")
        owner = owner[by_position]
        row = at[owner]
        return {
            "at": row,
            "t": cols["t"][row],
            "s": cols["s"][row],
            "born": cols["born"][row],
            "scale": scale[owner],
            "category": category[by_position],
            "index": index[by_position],
            "count": count[by_position],
        }

    # -- reading --------------------------------------------------------------------------------

    def values(self, leaf: Leaf, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(series indexes, values) of ``leaf`` at ``now_ns`` for the matching series with points in
        ``(now - window, now]``; a value may be NaN. Functions a metric's type lacks give nothing."""
        metric = self._metrics.get(leaf.selector.metric)
        if metric is None or metric.kind is None or not metric.chunks:
            return NO_VALUES
        key = (leaf.selector.metric, leaf.func, leaf.window_ns, now_ns)
        if key not in self._cache:
            if len(self._cache) > _CACHE_SIZE:  # many times without a batch between (the ticker)
                self._cache.clear()
                self._frames.clear()
            frame_key = (leaf.selector.metric, leaf.window_ns, now_ns)
            if frame_key not in self._frames:  # functions over one window share its slice
                self._frames[frame_key] = Frame(metric, leaf.window_ns, now_ns)
            self._cache[key] = compute(metric, leaf.func, self._frames[frame_key])
        sidx, vals = self._cache[key]
        if leaf.selector.matchers:
            hit = metric.matching(leaf.selector)[sidx]
            sidx, vals = sidx[hit], vals[hit]
        return sidx, vals


def _floats(rows: pa.Table, name: str) -> np.ndarray:
    column = rows.column(name)
    if column.null_count:
        column = pc.fill_null(column, np.nan)
    return column.to_numpy().astype(np.float64, copy=False)


def _list_column(rows: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner row of each element, its position in the row's list, the element) of a list column."""
    column = rows.column(name)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
    flat = pc.fill_null(pc.list_flatten(column), 0).to_numpy().astype(np.int64)
    owner = np.repeat(np.arange(lengths.size), lengths)
    return owner, np.arange(flat.size) - (np.cumsum(lengths) - lengths)[owner], flat
