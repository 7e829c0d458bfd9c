"""Per-series maths of alert conditions: a function of every series of a metric over one window.

:func:`compute` answers one leaf of a condition (``avg``, ``rate``, ``p99``, ``rate_of_change``,
the ``absent`` point count ...) for every series of a metric at once, over the points a
:class:`~otel_audio.processors.alerting.windows.MetricPoints` keeps: a :class:`Frame` slices the
window ``(now - window, now]`` out of the metric's time-sorted columns, and each function is one
numpy pass over the slice (``bincount`` per series), not a loop over series. Counted kinds (sums,
histograms, summaries) read the increments taken on arrival; a series' first point counts only
when the series started inside the window. ``docs/alerting-rules.md`` states every function's
meaning per metric type.

Kept apart from the ingest side (:mod:`otel_audio.processors.alerting.windows`), which decides
what is kept and caches these results, so the maths can be read and checked on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from otel_audio.processors.alerting.grammar import percentile
from otel_audio.store import histograms as hist

if TYPE_CHECKING:
    from otel_audio.processors.alerting.windows import MetricPoints

POINTS = "_points"  # the internal function of absent(): points per series
_COUNTED = ("sum", "histogram", "exponential_histogram", "summary")  # kinds with increments
HISTOGRAM_KINDS = ("histogram", "exponential_histogram")
NO_VALUES = (np.zeros(0, np.int64), np.zeros(0))  # no series: (series indexes, values)


class Frame:
    """The points of one metric in ``(now - window, now]``: their slice and the series present."""

    def __init__(self, metric: MetricPoints, window_ns: int, now_ns: int) -> None:
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


def compute(metric: MetricPoints, func: str, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``func`` of every series of ``metric`` with points in the frame's window."""
    kind, quantile = metric.kind, percentile(func)
    counted = kind in _COUNTED and (kind != "sum" or func in ("rate", "increase"))
    if (
        (kind == "gauge" and func in ("rate", "increase"))
        or (kind not in ("gauge", "sum") and func in ("last", "rate_of_change"))
        or (kind == "summary" and (func in ("min", "max") or quantile is not None))
        or frame.lo == frame.hi
    ):
        return NO_VALUES
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
    if quantile is not None and kind in HISTOGRAM_KINDS:
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


def _bucket_quantile(
    metric: MetricPoints, pts, lo: int, hi: int, start: int, now: int, q: float
) -> np.ndarray:
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
