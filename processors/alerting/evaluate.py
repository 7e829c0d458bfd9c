"""Streaming evaluation of parsed conditions: shared sliding windows, per-series functions, and/or/not.

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

:class:`Evaluator` answers, for one condition and a time ``now``, which label sets satisfy it
(:class:`~otel_audio.processors.alerting.model.Sample`). Leaf values are computed per series
over ``(now - window, now]`` with numpy and cached per ``(metric, function, window, now)`` until
the next batch, so 1,000 rules over the same metrics cost one pass per distinct leaf.
``docs/alerting-rules.md`` states every function's meaning per metric type.

Which ``now`` to pass: the newest point time of the batch just observed when evaluating on
arrival (event time, so a replay gives the same answers), and the wall clock on the ticker that
catches ``absent`` and staleness. Example::

    windows = Windows()
    rules = {name: Evaluator(parse(text), windows) for name, text in conditions.items()}
    touched = windows.observe(batch)
    now = pc.max(batch.points.column("time_unix_nano")).as_py()
    for name, ev in rules.items():
        if ev.metrics & touched:
            samples = ev.evaluate(now)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.alerting.grammar import (
    DEFAULT_WINDOW_NS,
    Absent,
    And,
    Anomaly,
    Call,
    Compare,
    Condition,
    Not,
    Selector,
    percentile,
)
from otel_audio.processors.alerting.model import Sample, matches_all
from otel_audio.processors.base import SERIES_SCHEMA, MetricBatch
from otel_audio.store import histograms as hist
from otel_audio.store.rollup import Carry, rollup

NEVER = np.iinfo(np.int64).max  # "born" of a point that has a predecessor: its increment always counts
POINTS = "_points"  # the internal function of absent(): points per series
_COUNTED = ("sum", "histogram", "exponential_histogram", "summary")  # kinds with increments
_HISTOGRAMS = ("histogram", "exponential_histogram")
_ROW_COLUMNS = ("count", "sum", "min", "max", "last", "increase", "sum_increase", "hist_min", "hist_max")


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


class _Metric:
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
        self._metrics: dict[str, _Metric] = {}
        self._series = SERIES_SCHEMA.empty_table()  # every watched series seen: rollup's type lookup
        self._carry = Carry.empty()
        self._sids = np.zeros(0, np.uint64)  # sorted ids of known series ...
        self._where = np.zeros((0, 4), np.int64)  # ... and their (metric number, index, history, delta)
        self._names: list[str] = []  # metric number -> name
        self._layouts: dict[tuple, int] = {}  # explicit bucket bounds -> layout id
        self._bounds: list[np.ndarray] = []  # layout id -> bounds
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._frames: dict[tuple, _Frame] = {}

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
                    self._sids, self._where = self._sids[kept], self._where[kept]
        for name, (longest, buckets) in wanted.items():
            metric = self._metrics.setdefault(name, _Metric(self._bounds))
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

    def metric(self, name: str) -> _Metric | None:
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
        return metric is not None and metric.buckets and metric.kind in _HISTOGRAMS

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
            return _NONE
        key = (leaf.selector.metric, leaf.func, leaf.window_ns, now_ns)
        if key not in self._cache:
            if len(self._cache) > _CACHE_SIZE:  # many times without a batch between (the ticker)
                self._cache.clear()
                self._frames.clear()
            frame_key = (leaf.selector.metric, leaf.window_ns, now_ns)
            if frame_key not in self._frames:  # functions over one window share its slice
                self._frames[frame_key] = _Frame(metric, leaf.window_ns, now_ns)
            self._cache[key] = _compute(metric, leaf.func, self._frames[frame_key])
        sidx, vals = self._cache[key]
        if leaf.selector.matchers:
            hit = metric.matching(leaf.selector)[sidx]
            sidx, vals = sidx[hit], vals[hit]
        return sidx, vals


_NONE = (np.zeros(0, np.int64), np.zeros(0))
_CACHE_SIZE = 65536  # leaf results kept between batches
_MAX_CHUNKS = 16  # batches a metric keeps apart before joining them into one array


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


class _Frame:
    """The points of one metric in ``(now - window, now]``: their slice and the series present."""

    def __init__(self, metric: _Metric, window_ns: int, now_ns: int) -> None:
        self.pts = metric.points()
        self.start, self.now = now_ns - window_ns, now_ns
        self.window_s = window_ns / 1e9
        self.lo, self.hi = (
            int(i) for i in np.searchsorted(self.pts["t"], [self.start, now_ns], side="right")
        )
        self.n = len(metric.labels)
        self.s = self.pts["s"][self.lo : self.hi]
        self.size = np.bincount(self.s, minlength=self.n)
        self.sidx = np.flatnonzero(self.size)

    def col(self, name: str) -> np.ndarray:
        return self.pts[name][self.lo : self.hi]

    def total(self, values: np.ndarray) -> np.ndarray:
        """Per present series, the sum of ``values`` (one per point of the slice)."""
        return np.bincount(self.s, weights=values, minlength=self.n)[self.sidx]


def _compute(metric: _Metric, func: str, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """``func`` of every series of ``metric`` with points in the frame's window."""
    kind, quantile = metric.kind, percentile(func)
    counted = kind in _COUNTED and (kind != "sum" or func in ("rate", "increase"))
    if (
        (kind == "gauge" and func in ("rate", "increase"))
        or (kind not in ("gauge", "sum") and func in ("last", "rate_of_change"))
        or (kind == "summary" and (func in ("min", "max") or quantile is not None))
        or frame.lo == frame.hi
    ):
        return _NONE
    pts, lo, hi, n, s, sidx, col, total = (
        frame.pts,
        frame.lo,
        frame.hi,
        frame.n,
        frame.s,
        frame.sidx,
        frame.col,
        frame.total,
    )
    now_ns, window_ns = frame.now, frame.now - frame.start

    if func == POINTS:
        return sidx, total(col("count"))
    if counted:  # increments; a series' first point counts only when it started inside the window
        counts = np.where(col("born") > now_ns - window_ns, 1.0, 0.0)
        inc = total(counts * col("increase"))
        if func in ("count", "increase", "rate"):
            return sidx, inc / (window_ns / 1e9) if func == "rate" else inc
        if func in ("sum", "avg"):
            sums = total(counts * col("sum_increase"))
            with np.errstate(invalid="ignore", divide="ignore"):  # no observations: no average
                return sidx, sums if func == "sum" else np.where(inc != 0, sums / inc, np.nan)
    if func in ("min", "max"):
        name = {"min": "min", "max": "max"}[func] if kind in ("gauge", "sum") else f"hist_{func}"
        out = np.full(n, np.nan)
        (np.fmin if func == "min" else np.fmax).at(out, s, col(name))
        return sidx, out[sidx]
    if quantile is not None and kind in _HISTOGRAMS:
        return sidx, _bucket_quantile(metric, pts, lo, hi, now_ns - window_ns, now_ns, quantile)[sidx]
    if func == "avg":
        with np.errstate(invalid="ignore", divide="ignore"):
            return sidx, total(col("sum")) / total(col("count"))
    if func == "count":
        return sidx, total(col("count"))
    if func in ("last", "sum"):  # sum: the series' latest value, as the query API's per-series sum
        newest = np.full(n, -1)
        np.maximum.at(newest, s, np.arange(s.size))
        return sidx, col("last")[newest[sidx]]
    values = col("last")
    if func == "rate_of_change":  # least-squares slope per second
        x = (col("t") - now_ns) / 1e9
        size = frame.size[sidx].astype(np.float64)
        full_x, full_y = np.zeros(n), np.zeros(n)
        full_x[sidx], full_y[sidx] = total(x) / size, total(values) / size
        dx, dy = x - full_x[s], values - full_y[s]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = total(dx * dy) / total(dx * dx)
        return sidx, np.where(size >= 2, slope, np.nan)
    # a percentile of the points' values, interpolated linearly as numpy.quantile
    order = np.lexsort((values, s))
    s, values = s[order], values[order]
    starts = np.searchsorted(s, sidx)
    size = frame.size[sidx]
    pos = quantile * (size - 1)
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, size - 1)
    low, high = values[starts + below], values[starts + above]
    return sidx, low + (pos - below) * (high - low)


def _bucket_quantile(metric: _Metric, pts, lo: int, hi: int, start: int, now: int, q: float) -> np.ndarray:
    """The ``q`` quantile of each series' merged bucket increments in ``(start, now]`` (NaN: none)."""
    n = len(metric.labels)
    if not metric.entries:
        return np.full(n, np.nan)
    e = {k: np.concatenate([c[k] for c in metric.entries]) for k in metric.entries[0]}
    keep = (e["t"] > start) & (e["t"] <= now) & (e["born"] > start)
    e = {k: v[keep] for k, v in e.items()}
    if metric.kind == "exponential_histogram":
        return hist.grouped_quantile_exponential(
            e["s"], e["scale"], e["category"], e["index"], e["count"], n, q
        )
    out = np.full(n, np.nan)
    layout = pts["layout"][lo:hi].astype(np.float64)
    s = pts["s"][lo:hi]
    low, high = np.full(n, np.nan), np.full(n, np.nan)
    np.fmin.at(low, s, layout)
    np.fmax.at(high, s, layout)
    for lay in np.unique(low[low == high]).astype(np.int64):
        bounds = metric.bounds[lay]
        series = np.flatnonzero((low == lay) & (high == lay))  # bounds that changed in the window: NaN
        mine = np.isin(e["s"], series) & (e["category"] == lay)
        width = bounds.size + 1
        slot = np.searchsorted(series, e["s"][mine])
        counts = np.bincount(
            slot * width + e["index"][mine], weights=e["count"][mine], minlength=series.size * width
        )
        out[series] = hist.quantile_explicit(bounds, counts.reshape(series.size, width), q)
    return out


_COMPARE = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
Found = dict[tuple, tuple[dict[str, str], float]]  # label-set key -> (labels, value)


class Evaluator:
    """One condition over shared :class:`Windows`: which label sets satisfy it at a time.

    Args:
        condition: a parsed condition (:func:`~otel_audio.processors.alerting.grammar.parse`).
        windows: the shared windows; the condition's leaves are watched from now on.
    """

    def __init__(self, condition: Condition, windows: Windows) -> None:
        self.condition = condition
        self.windows = windows
        self.metrics = condition.metrics  # re-evaluate when a batch touched one of these
        self._leaves: dict[int, Leaf] = {}  # by id of the Compare node: hashing a tree is slow
        windows.watch(condition)

    def close(self) -> None:
        """Stop watching the condition's windows."""
        self.windows.unwatch(self.condition)

    def evaluate(self, now_ns: int) -> list[Sample]:
        """The label sets for which the condition holds at ``now_ns``, sorted by labels, each with
        the value of its first comparison's operand (``absent``: 1)."""
        if isinstance(self.condition, Compare):  # most rules: straight from the arrays
            sidx, values = self._hits(self.condition, now_ns)
            if sidx.size == 0:
                return []
            metric = self.windows.metric(self._leaves[id(self.condition)].selector.metric)
            sidx, values = metric.by_labels(sidx, values)
            return [
                Sample(dict(metric.labels[s]), v) for s, v in zip(sidx.tolist(), values.tolist(), strict=True)
            ]
        holds, _ = self._node(self.condition, now_ns, False)
        return [Sample(dict(labels), value) for _, (labels, value) in sorted(holds.items())]

    def _node(self, node: Condition, now: int, domain: bool) -> tuple[Found, Found | None]:
        """(label sets where ``node`` holds, label sets it is decided for, when ``domain`` asks)."""
        if isinstance(node, Compare):
            return self._compare(node, now, domain)
        if isinstance(node, Absent):
            return self._absent(node, now)
        if isinstance(node, Not):
            holds, decided = self._node(node.operand, now, True)
            return {k: v for k, v in decided.items() if k not in holds}, decided
        left, left_all = self._node(node.left, now, domain)
        right, right_all = self._node(node.right, now, domain)
        if isinstance(node, And):
            return _join(left, right), _join(left_all, right_all) if domain else None
        return _union(left, right), _union(left_all, right_all) if domain else None

    def _hits(self, node: Compare, now: int, everything: bool = False) -> tuple[np.ndarray, ...]:
        """(series, values) where the comparison holds; with ``everything``, also all decided ones."""
        leaf = self._leaves.get(id(node)) or self._leaves.setdefault(id(node), leaf_of(node))
        sidx, values = self.windows.values(leaf, now)
        hit = _COMPARE[node.op](values, node.number) & ~np.isnan(values)  # NaN compares false
        return (sidx[hit], values[hit], sidx, values) if everything else (sidx[hit], values[hit])

    def _compare(self, node: Compare, now: int, domain: bool) -> tuple[Found, Found | None]:
        sidx, values, all_sidx, all_values = self._hits(node, now, True)
        if all_sidx.size == 0:
            return {}, {} if domain else None
        metric = self.windows.metric(self._leaves[id(node)].selector.metric)
        return metric.found(sidx, values), metric.found(all_sidx, all_values) if domain else None

    def _absent(self, node: Absent, now: int) -> tuple[Found, Found]:
        sidx, _ = self.windows.values(leaf_of(node), now)
        labels = {m.name: m.value for m in node.selector.matchers if m.op == "="}
        key = tuple(sorted(labels.items()))
        if sidx.size:
            return {}, {key: (labels, 0.0)}
        return {key: (labels, 1.0)}, {key: (labels, 1.0)}


def _union(left: Found | None, right: Found | None) -> Found | None:
    """Every label set of either side; the left side's value where both have one."""
    if left is None or right is None:
        return None
    out = dict(right)
    out.update(left)
    return out


def _join(left: Found | None, right: Found | None) -> Found | None:
    """Pairs whose shared label names carry equal values, labels merged, the left side's value.

    Label sets are grouped by their names, so each pair of groups is one hash join on the names
    the two groups share (one pair of groups when both sides come from one metric each).
    """
    if left is None or right is None:
        return None
    out: Found = {}
    by_names: dict[frozenset, list] = {}
    for key, item in right.items():
        by_names.setdefault(frozenset(k for k, _ in key), []).append(item)
    left_groups: dict[frozenset, list] = {}
    for key, item in left.items():
        left_groups.setdefault(frozenset(k for k, _ in key), []).append(item)
    for left_names, left_items in left_groups.items():
        for right_names, right_items in by_names.items():
            shared = sorted(left_names & right_names)
            index: dict[tuple, list] = {}
            for labels, _ in right_items:
                index.setdefault(tuple(labels[k] for k in shared), []).append(labels)
            for labels, value in left_items:
                for other in index.get(tuple(labels[k] for k in shared), ()):
                    merged = {**other, **labels}
                    out.setdefault(tuple(sorted(merged.items())), (merged, value))
    return out
