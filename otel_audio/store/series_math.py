"""The time-series maths of range queries: bucketing, counter increments, histogram quantiles.

:class:`BucketContext` places fetched points (sorted by series, then time) into (group, time
bucket) cells; :func:`compute` reduces each cell for one aggregation. Everything is vectorised
with numpy; the rules (reset detection by start time, merged histogram increments) are the ones
``docs/query.md`` states. The query engine (:mod:`otel_audio.store.query`) fetches and groups;
this module only counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.store import histograms as hist
from otel_audio.store.errors import QueryError

if TYPE_CHECKING:
    from otel_audio.store.query import RangeQuery


class BucketContext:
    """Fetched points (sorted by series then time) and where each lands: group, bucket, key."""

    def __init__(self, q: RangeQuery, n: int, n_groups: int, gidx: np.ndarray, pts: pa.Table, delta, labels):
        self.q, self.n, self.size, self.delta, self.labels, self.pts = q, n, n_groups * n, delta, labels, pts
        self.sidx = column(pts, "sidx", 0).astype(np.int64)
        self.t = column(pts, "t", 0).astype(np.int64)
        self.inrange = self.t >= q.start_ns
        bucket = (self.t - q.start_ns) // q.step_ns
        self.key = np.where(self.inrange, gidx[self.sidx] * n + bucket, -1)
        self.series_key = np.where(self.inrange, self.sidx * n + bucket, -1)
        self.has_prev = np.zeros(self.t.size, dtype=bool)
        self.has_prev[1:] = self.sidx[1:] == self.sidx[:-1]

    def present(self) -> np.ndarray:
        return np.bincount(self.key[self.inrange], minlength=self.size) > 0

    def total(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` per key; NaN where no point landed."""
        out = np.bincount(self.key[self.inrange], weights=values[self.inrange], minlength=self.size)
        return np.where(self.present(), out, np.nan)

    def increments(self, v: np.ndarray, st: np.ndarray, monotonic: bool, extra_reset=None):
        """Masks (diff, full): take ``v - previous`` or ``v`` itself (a reset, or a counter born in range)."""
        if self.delta:
            return np.zeros(v.size, dtype=bool), np.ones(v.size, dtype=bool)
        prev_v, prev_st = np.roll(v, 1), np.roll(st, 1)
        reset = st != prev_st
        if monotonic:
            reset |= v < prev_v
        if extra_reset is not None:
            reset |= extra_reset
        reset &= self.has_prev
        hi = self.q.start_ns + self.n * self.q.step_ns
        born_inside = ~self.has_prev & (st >= self.q.start_ns) & (st < hi)
        return self.has_prev & ~reset, reset | born_inside

    def apply(self, v: np.ndarray, diff: np.ndarray, full: np.ndarray) -> np.ndarray:
        return np.where(diff, v - np.roll(v, 1), np.where(full, v, 0.0))


def column(table: pa.Table, name: str, fill: float) -> np.ndarray:
    return pc.fill_null(table.column(name), fill).to_numpy()


def _reduce_raw(ctx: BucketContext, v: np.ndarray, agg: str, quantile: float | None) -> np.ndarray:
    """avg/min/max/count/last/sum/pNN of raw values per key (sum: of each series' last value)."""
    m = ctx.inrange & ~np.isnan(v)
    key, vals, t = ctx.key[m], v[m], ctx.t[m]
    out = np.full(ctx.size, np.nan)
    if agg in ("avg", "count"):
        counts = np.bincount(key, minlength=ctx.size).astype(np.float64)
        sums = np.bincount(key, weights=vals, minlength=ctx.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = counts if agg == "count" else sums / counts
        return np.where(counts > 0, res, np.nan)
    if agg == "sum":
        skey = ctx.series_key[m]
        order = np.lexsort((t, skey))
        last = _segments(skey[order])[1] - 1
        res = np.bincount(key[order][last], weights=vals[order][last], minlength=ctx.size)
        return np.where(np.bincount(key, minlength=ctx.size) > 0, res, np.nan)
    order = np.lexsort((t if agg == "last" else vals, key))
    key, vals = key[order], vals[order]
    starts, ends = _segments(key)
    if agg == "min":
        out[key[starts]] = vals[starts]
    elif agg in ("max", "last"):
        out[key[starts]] = vals[ends - 1]
    else:  # percentile by linear interpolation, as numpy's default
        pos = quantile * (ends - starts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, ends - starts - 1)
        out[key[starts]] = vals[starts + lo] + (pos - lo) * (vals[starts + hi] - vals[starts + lo])
    return out


def _segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.r_[starts[1:], sorted_keys.size]


def compute(ctx: BucketContext, kind: str, agg: str, quantile: float | None, monotonic: bool) -> np.ndarray:
    step_s = ctx.q.step_ns / 1e9
    st = column(ctx.pts, "st", 0).astype(np.int64)
    v = column(ctx.pts, "v", np.nan).astype(np.float64)
    if kind in ("gauge", "sum"):
        if agg in ("rate", "increase"):
            inc = ctx.total(ctx.apply(v, *ctx.increments(v, st, monotonic)))
            values = inc / step_s if agg == "rate" else inc
        else:
            values = _reduce_raw(ctx, v, agg, quantile)
        return values.reshape(-1, ctx.n)
    count = column(ctx.pts, "c", 0).astype(np.float64)
    extra = None
    if kind == "histogram" and agg == "pNN":
        extra = _roll_differs(column(ctx.pts, "bh", 0))
    elif kind == "exponential_histogram" and agg == "pNN":
        zero = column(ctx.pts, "exp_zero_count", 0).astype(np.float64)
        extra = zero < np.roll(zero, 1)
    diff, full = ctx.increments(count, st, True, extra)
    if agg in ("min", "max"):
        values = _reduce_raw(
            ctx, column(ctx.pts, "mn" if agg == "min" else "mx", np.nan).astype(float), agg, None
        )
    elif agg in ("count", "increase", "rate"):
        values = ctx.total(ctx.apply(count, diff, full))
        values = values / step_s if agg == "rate" else values
    elif agg in ("sum", "avg"):
        values = ctx.total(ctx.apply(v, diff, full))
        if agg == "avg":
            with np.errstate(invalid="ignore", divide="ignore"):
                values = values / ctx.total(ctx.apply(count, diff, full))
    elif kind == "histogram":
        values = _explicit_quantile(ctx, diff, full, quantile)
    elif kind == "exponential_histogram":
        values = _exponential_quantile(ctx, diff, full, quantile)
    else:
        values = _summary_quantile(ctx, quantile)
    return values.reshape(-1, ctx.n)


def _roll_differs(a: np.ndarray) -> np.ndarray:
    return a != np.roll(a, 1)


def _list_rows(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat values, per-row length, per-row start in flat) of a list column."""
    column = table.column(name)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
    flat = pc.fill_null(pc.list_flatten(column), 0).to_numpy()
    return flat, lengths, np.cumsum(lengths) - lengths


def _explicit_quantile(ctx: BucketContext, diff: np.ndarray, full: np.ndarray, quantile: float) -> np.ndarray:
    bid, first = _layout_ids(column(ctx.pts, "bh", 0))
    bounds = [ctx.pts.column("bounds")[int(i)].as_py() or [] for i in first]
    _check_one_layout_per_group(ctx, bid, bounds)
    flat, lengths, starts = _list_rows(ctx.pts, "bucket_counts")
    out = np.full(ctx.size, np.nan)
    for b in range(len(bounds)):
        rows = np.flatnonzero(bid == b)
        width = len(bounds[b]) + 1
        rows = rows[lengths[rows] == width]
        m = _bucket_matrix(flat, starts, rows, width)
        # A diffed point's predecessor has its layout (a layout change is a reset), so it is the row above.
        d = diff[rows] & (lengths[np.maximum(rows - 1, 0)] == width)
        inc = np.empty_like(m)  # m - the row above; where a bucket went down, the point is taken whole
        inc[:1] = 0.0
        np.subtract(m[1:], m[:-1], out=inc[1:])
        by_delta = d & ~(inc < 0).any(axis=1)
        whole = ~by_delta & (full[rows] | d)
        np.copyto(inc, m, where=whole[:, None])
        inc[~by_delta & ~whole] = 0.0
        keys = np.where(ctx.inrange[rows], ctx.key[rows], -1)
        if not (keys >= 0).any():
            continue
        cells, merged = _sum_rows_by_key(keys, inc, ctx.size)
        out[cells] = hist.quantile_explicit(bounds[b], merged, quantile)
    return out


def _bucket_matrix(flat: np.ndarray, starts: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """The bucket counts of ``rows`` (each ``width`` long) as a float matrix, one row per point."""
    if rows.size and rows[-1] - rows[0] == rows.size - 1:  # consecutive points: one slice of ``flat``
        first = starts[rows[0]]
        return flat[first : first + rows.size * width].reshape(-1, width).astype(np.float64)
    return flat[starts[rows, None] + np.arange(width)].astype(np.float64)


def _layout_ids(bh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(id of each point's bucket layout, first point of each id), as ``np.unique``'s inverse and index.

    Points come in runs (a series rarely changes bounds), so only run heads are sorted.
    """
    head = np.ones(bh.size, dtype=bool)
    head[1:] = bh[1:] != bh[:-1]
    run_start = np.flatnonzero(head)
    _, first_run, run_id = np.unique(bh[run_start], return_index=True, return_inverse=True)
    return np.repeat(run_id, np.diff(np.append(run_start, bh.size))), run_start[first_run]


def _check_one_layout_per_group(ctx: BucketContext, bid: np.ndarray, bounds: list) -> None:
    """Explicit histograms merge only with equal bounds: one layout per group, else a QueryError."""
    group, b = ctx.key[ctx.inrange] // ctx.n, bid[ctx.inrange]
    head = np.ones(group.size, dtype=bool)  # repeated (group, layout) pairs add nothing to the set
    head[1:] = (group[1:] != group[:-1]) | (b[1:] != b[:-1])
    n_layouts = max(len(bounds), 1)
    pairs = np.unique(group[head] * n_layouts + b[head])
    dup = np.flatnonzero(pairs[1:] // n_layouts == pairs[:-1] // n_layouts)
    if dup.size:
        g, b1, b2 = pairs[dup[0]] // n_layouts, pairs[dup[0]] % n_layouts, pairs[dup[0] + 1] % n_layouts
        raise QueryError(
            f"cannot merge explicit histograms of {ctx.q.metric!r} in group {ctx.labels[g]}: bucket bounds "
            f"differ ({bounds[b1]} vs {bounds[b2]}); group_by or match a label that separates them"
        )


def _sum_rows_by_key(keys: np.ndarray, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys ascending, sum of the ``rows`` of each) for ``0 <= keys < size``; -1 is left out.

    Counting rather than sorting: ``np.bincount`` adds in input order, as a stable sort would.
    """
    keys = np.where(keys < 0, size, keys)
    present = np.zeros(size + 1, dtype=bool)
    present[keys] = True
    cells = np.flatnonzero(present[:size])
    slot = np.cumsum(present) - 1  # left-out rows land in the last slot, dropped below
    width = rows.shape[1]
    flat_index = (slot[keys] * width)[:, None] + np.arange(width)
    summed = np.bincount(flat_index.ravel(), weights=rows.ravel(), minlength=(cells.size + 1) * width)
    return cells, summed[: cells.size * width].reshape(cells.size, width)


def _exponential_quantile(
    ctx: BucketContext, diff: np.ndarray, full: np.ndarray, quantile: float
) -> np.ndarray:
    n_pts = ctx.t.size
    diff, full = diff & ctx.inrange, full & ctx.inrange
    scale = column(ctx.pts, "exp_scale", 0).astype(np.int64)
    pair_scale = np.minimum(scale, np.roll(scale, 1))  # a diffed point and its predecessor meet here
    zero = column(ctx.pts, "exp_zero_count", 0).astype(np.int64)
    raw, diffs = {}, {}
    went_down = np.zeros(n_pts, dtype=bool)
    for cat, offset_col, counts_col in (
        (hist.NEGATIVE, "exp_negative_offset", "exp_negative_counts"),
        (hist.POSITIVE, "exp_positive_offset", "exp_positive_counts"),
    ):
        flat, lengths, starts = _list_rows(ctx.pts, counts_col)
        offset = column(ctx.pts, offset_col, 0).astype(np.int64)
        owner = np.repeat(np.arange(n_pts), lengths)
        raw[cat] = (owner, offset[owner] + np.arange(flat.size) - starts[owner], flat.astype(np.int64))
        diffs[cat] = _bucket_diffs(raw[cat], offset, lengths, scale, pair_scale, diff)
        went_down[diffs[cat][0][diffs[cat][2] < 0]] = True
    went_down |= diff & (zero < np.roll(zero, 1))
    full = full | (diff & went_down)
    diff = diff & ~went_down

    parts = []  # (owner, scale, category, index, count) of every increment entry
    for cat in (hist.NEGATIVE, hist.POSITIVE):
        owner, idx, cnt = diffs[cat]
        ok = diff[owner]
        parts.append((owner[ok], pair_scale[owner[ok]], np.full(ok.sum(), cat), idx[ok], cnt[ok]))
        owner, idx, cnt = raw[cat]
        f = full[owner]
        parts.append((owner[f], scale[owner[f]], np.full(f.sum(), cat), idx[f], cnt[f]))
    for mask, counts, scales in ((diff, zero - np.roll(zero, 1), pair_scale), (full, zero, scale)):
        owner = np.flatnonzero(mask)
        parts.append(
            (owner, scales[owner], np.full(owner.size, hist.ZERO), np.zeros(owner.size), counts[owner])
        )
    owner, e_scale, e_cat, e_idx, e_cnt = (
        np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True)
    )
    return hist.grouped_quantile_exponential(ctx.key[owner], e_scale, e_cat, e_idx, e_cnt, ctx.size, quantile)


def _bucket_diffs(raw, offset, lengths, scale, pair_scale, diff) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, index, count) of ``buckets(p) - buckets(p - 1)`` at ``pair_scale[p]`` for diffed points.

    Both histograms are downscaled to the pair's scale and added with signs into one dense window
    per point (``np.add.at``, no sort); zero results are dropped, negative ones mean a reset. A point
    laid out like its predecessor (same scale, offset and length, the usual case) is simply
    subtracted bucket by bucket.
    """
    owner, idx, cnt = raw
    n_pts = offset.size
    same = (
        diff
        & (scale == np.roll(scale, 1))
        & (offset == np.roll(offset, 1))
        & (lengths == np.roll(lengths, 1))
    )
    e = np.flatnonzero(same[owner])
    e_owner = owner[e]
    e_cnt = cnt[e] - cnt[e - lengths[e_owner]]  # the predecessor's entries sit just before
    changed = e_cnt != 0
    aligned = e_owner[changed], idx[e][changed], e_cnt[changed]
    diff = diff & ~same
    nxt = np.minimum(owner + 1, n_pts - 1)
    cur, prev = diff[owner], diff[nxt] & (owner + 1 < n_pts)
    d_owner = np.concatenate([owner[cur], owner[prev] + 1])
    d_idx = np.concatenate(
        [
            idx[cur] >> (scale[owner[cur]] - pair_scale[owner[cur]]),
            idx[prev] >> (scale[owner[prev]] - pair_scale[nxt[prev]]),
        ]
    )
    d_cnt = np.concatenate([cnt[cur], -cnt[prev]])
    # each point's window: from the lower to the higher end of its own and its predecessor's buckets
    shift_own, shift_prev = scale - pair_scale, np.roll(scale, 1) - pair_scale
    has, has_prev = lengths > 0, np.roll(lengths, 1) > 0
    big = np.iinfo(np.int64).max
    lo = np.minimum(
        np.where(has, offset >> shift_own, big), np.where(has_prev, np.roll(offset, 1) >> shift_prev, big)
    )
    last, last_prev = offset + lengths - 1, np.roll(offset + lengths - 1, 1)
    hi = np.maximum(np.where(has, last >> shift_own, -big), np.where(has_prev, last_prev >> shift_prev, -big))
    width = np.where(diff & (has | has_prev), hi - lo + 1, 0)
    base = np.cumsum(width) - width
    dense = np.zeros(int(width.sum()), dtype=np.int64)
    np.add.at(dense, base[d_owner] + d_idx - lo[d_owner], d_cnt)  # int64: exact, and faster than bincount
    pos = np.flatnonzero(dense)
    out_owner = np.repeat(np.arange(n_pts), width)[pos]
    windowed = out_owner, lo[out_owner] + pos - base[out_owner], dense[pos]
    return tuple(np.concatenate(parts) for parts in zip(aligned, windowed, strict=True))


def _summary_quantile(ctx: BucketContext, quantile: float) -> np.ndarray:
    qs, lengths, _ = _list_rows(ctx.pts, "quantiles")
    qv, _, _ = _list_rows(ctx.pts, "quantile_values")
    owner = np.repeat(np.arange(ctx.t.size), lengths)
    hit = np.abs(qs - quantile) < 1e-9
    value = np.full(ctx.t.size, np.nan)
    value[owner[hit]] = qv[hit]
    if np.isnan(value[ctx.inrange]).all():
        available = sorted({round(float(x), 6) for x in qs[ctx.inrange[owner]]})
        raise QueryError(
            f"summary {ctx.q.metric!r} has no quantile {quantile:g} in range; "
            f"it reports {available or 'none'}"
        )
    # Quantiles of different series cannot be merged: each series' latest value, then the group's max.
    m = ctx.inrange & ~np.isnan(value)
    skey, t, key, vals = ctx.series_key[m], ctx.t[m], ctx.key[m], value[m]
    order = np.lexsort((t, skey))
    last = order[_segments(skey[order])[1] - 1]
    out = np.full(ctx.size, np.nan)
    np.fmax.at(out, key[last], vals[last])
    return out
