"""The counting (sort-free) histogram merges give exactly what a plain per-point loop gives.

Each test builds random points, runs the vectorised function and a straightforward reference
written here (Python loops and dicts, one point at a time), and demands identical numbers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.store import histograms as hist
from otel_audio.store.query import QueryError, RangeQuery
from otel_audio.store.series_math import BucketContext, compute

S = 10**9
BOUNDS = ([5.0, 10.0, 25.0], [1.0, 2.0], [5.0, 10.0, 25.0, 50.0])
N_BUCKETS = 6
STEP = 10


def explicit_points(rng: np.random.Generator, n_series: int, layouts: list[int]) -> pa.Table:
    """Cumulative explicit-histogram points (series, then time) with restarts, drops and bad rows."""
    rows = []
    for s in range(n_series):
        counts, start, layout = None, 0, layouts[s]
        for t in np.sort(rng.choice(np.arange(-15, STEP * N_BUCKETS), rng.integers(1, 30), replace=False)):
            width = len(BOUNDS[layout]) + 1
            step = rng.poisson(rng.uniform(0, 4), width)
            r = rng.random()
            if counts is None or r < 0.1:  # a restart
                counts, start = step, int(t)
            elif r < 0.15:  # a drop without a new start time
                counts = np.maximum(counts - 2, 0)
            else:
                counts = counts + step
            bucket_counts = counts.tolist() + ([7] if rng.random() < 0.04 else [])  # a malformed row
            rows.append((s, int(t) * S, start * S, float(counts.sum()), BOUNDS[layout], bucket_counts))
    sidx, t, st, c, bounds, bucket_counts = zip(*rows, strict=True)
    return pa.table(
        {
            "sidx": pa.array(sidx, pa.int64()),
            "t": pa.array(t, pa.int64()),
            "st": pa.array(st, pa.int64()),
            "v": pa.array(c, pa.float64()),
            "c": pa.array(c, pa.float64()),
            "bh": pa.array([hash(tuple(b)) % (1 << 62) for b in bounds], pa.uint64()),
            "bounds": pa.array(bounds, pa.list_(pa.float64())),
            "bucket_counts": pa.array(bucket_counts, pa.list_(pa.uint64())),
        }
    )


def context(pts: pa.Table, gidx: np.ndarray, delta: bool = False) -> BucketContext:
    q = RangeQuery("duration", 0, STEP * N_BUCKETS * S, STEP * S, agg="p50")
    n_groups = int(gidx.max()) + 1
    return BucketContext(q, N_BUCKETS, n_groups, gidx, pts, delta, [{"g": str(g)} for g in range(n_groups)])


def reference_explicit(pts: pa.Table, gidx: np.ndarray, q: float, delta: bool) -> np.ndarray:
    """Per point: the increment over the previous point of the series (whole after a reset), summed."""
    rows = pts.to_pylist()
    merged: dict[int, np.ndarray] = {}
    layout: dict[int, list] = {}
    for i, p in enumerate(rows):
        prev = rows[i - 1] if i and rows[i - 1]["sidx"] == p["sidx"] else None
        width = len(p["bounds"]) + 1
        if p["t"] < 0 or len(p["bucket_counts"]) != width:
            continue
        m = np.array(p["bucket_counts"], dtype=np.float64)
        if delta:
            inc = m
        elif prev is None:
            inc = m if p["st"] >= 0 else np.zeros(width)  # born inside the range, or no baseline
        elif prev["st"] != p["st"] or prev["c"] > p["c"] or prev["bh"] != p["bh"]:
            inc = m  # a reset
        elif len(prev["bucket_counts"]) != width:
            inc = np.zeros(width)
        else:
            inc = m - np.array(prev["bucket_counts"], dtype=np.float64)
            if (inc < 0).any():
                inc = m
        key = int(gidx[p["sidx"]]) * N_BUCKETS + p["t"] // (STEP * S)
        merged[key] = merged.get(key, 0.0) + inc
        layout[key] = p["bounds"]
    out = np.full((int(gidx.max()) + 1) * N_BUCKETS, np.nan)
    for key, counts in merged.items():
        out[key] = hist.quantile_explicit(layout[key], counts, q)
    return out.reshape(-1, N_BUCKETS)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("q", [0.0, 0.5, 0.95, 1.0])
def test_explicit_percentile_equals_a_per_point_reference(seed, q):
    rng = np.random.default_rng(seed)
    n_series = int(rng.integers(1, 8))
    gidx = rng.integers(0, 3, n_series)
    gidx = np.unique(gidx, return_inverse=True)[1]
    layouts = [int(g) % len(BOUNDS) for g in gidx]  # one layout per group: no conflict
    pts = explicit_points(rng, n_series, layouts)
    delta = bool(seed % 4 == 0)
    actual = compute(context(pts, gidx, delta), "histogram", "pNN", q, True)
    np.testing.assert_array_equal(actual, reference_explicit(pts, gidx, q, delta))


def test_explicit_percentile_names_the_first_conflicting_group_and_bounds():
    rng = np.random.default_rng(0)
    pts = explicit_points(rng, 4, [0, 0, 1, 2])
    gidx = np.array([0, 1, 1, 1])
    with pytest.raises(QueryError, match=r"in group \{'g': '1'\}: bucket bounds differ \(\["):
        compute(context(pts, gidx), "histogram", "pNN", 0.5, True)


def reference_merge(group, scale, category, index, counts, n_groups):
    """``grouped_merge_exponential`` by dictionary: each group at its smallest scale."""
    group_scale = np.zeros(n_groups, dtype=np.int64)
    entries = [e for e in zip(group, scale, category, index, counts, strict=True) if e[4] > 0]
    for g in range(n_groups):
        scales = [e[1] for e in entries if e[0] == g]
        group_scale[g] = min(scales) if scales else 0
    cells: dict[tuple, int] = defaultdict(int)
    for g, sc, cat, idx, cnt in entries:
        idx = 0 if cat == hist.ZERO else idx >> (sc - group_scale[g])
        cells[(g, cat, -idx if cat == hist.NEGATIVE else idx)] += cnt
    ordered = sorted(cells)
    return (
        group_scale,
        np.array([c[0] for c in ordered], dtype=np.int64),
        np.array([c[1] for c in ordered], dtype=np.int64),
        np.array([-c[2] if c[1] == hist.NEGATIVE else c[2] for c in ordered], dtype=np.int64),
        np.array([cells[c] for c in ordered], dtype=np.int64),
    )


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("spread", [20, 1 << 30])  # close buckets (counted) and far-apart ones (sorted)
def test_grouped_merge_exponential_equals_a_dictionary_merge(seed, spread):
    rng = np.random.default_rng(seed)
    n, n_groups = int(rng.integers(0, 300)), int(rng.integers(1, 6))
    args = (
        rng.integers(0, n_groups, n),
        rng.integers(-2, 6, n),
        rng.integers(0, 3, n),
        rng.integers(-spread, spread, n),
        rng.integers(-2, 50, n),
    )
    actual = hist.grouped_merge_exponential(*args, n_groups)
    expected = reference_merge(*args, n_groups)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def test_grouped_merge_exponential_orders_negative_zero_positive_by_value():
    group_scale, group, category, index, counts = hist.grouped_merge_exponential(
        np.zeros(5, np.int64),
        np.full(5, 3),
        np.array([hist.POSITIVE, hist.NEGATIVE, hist.ZERO, hist.NEGATIVE, hist.POSITIVE]),
        np.array([4, 1, 0, 7, -2]),
        np.array([1, 2, 3, 4, 5]),
        1,
    )
    assert group_scale.tolist() == [3]
    assert group.tolist() == [0] * 5
    assert category.tolist() == [hist.NEGATIVE, hist.NEGATIVE, hist.ZERO, hist.POSITIVE, hist.POSITIVE]
    assert index.tolist() == [7, 1, 0, -2, 4]
    assert counts.tolist() == [4, 2, 3, 5, 1]


def exponential_points(rng: np.random.Generator, n_series: int) -> pa.Table:
    """Cumulative exponential-histogram points (series, then time): restarts, drops, rescaling."""
    rows = []
    for s in range(n_series):
        values, start = np.zeros(0), 0
        for t in np.sort(rng.choice(np.arange(-15, STEP * N_BUCKETS), rng.integers(1, 30), replace=False)):
            new = np.concatenate([rng.lognormal(2, 1.5, rng.integers(0, 20)), -rng.lognormal(1, 1, 2), [0.0]])
            r = rng.random()
            if r < 0.1:  # a restart
                values, start = new, int(t)
            elif r < 0.15:  # a drop without a new start time
                values = values[: values.size // 2]
            else:
                values = np.concatenate([values, new])
            h = hist.exponential_histogram(
                values, int(rng.integers(0, 5)), max_buckets=int(rng.choice([8, 64]))
            )
            rows.append(
                {
                    "sidx": s,
                    "t": int(t) * S,
                    "st": start * S,
                    "v": float(values.sum()),
                    "c": float(values.size),
                    "exp_scale": h.scale,
                    "exp_zero_count": h.zero_count,
                    "exp_positive_offset": h.positive_offset,
                    "exp_positive_counts": h.positive_counts.tolist(),
                    "exp_negative_offset": h.negative_offset,
                    "exp_negative_counts": h.negative_counts.tolist(),
                }
            )
    return pa.Table.from_pylist(rows)


def entries(p: dict, scale: int) -> dict[tuple[int, int], int]:
    """{(category, index at ``scale``): count} of point ``p``."""
    out: dict[tuple[int, int], int] = defaultdict(int)
    out[(hist.ZERO, 0)] += p["exp_zero_count"]
    for cat, name in ((hist.NEGATIVE, "negative"), (hist.POSITIVE, "positive")):
        for j, c in enumerate(p[f"exp_{name}_counts"]):
            out[(cat, (p[f"exp_{name}_offset"] + j) >> (p["exp_scale"] - scale))] += c
    return out


def reference_exponential(pts: pa.Table, gidx: np.ndarray, q: float) -> np.ndarray:
    """Per point: bucket increments over the previous point at their common scale (whole after a reset)."""
    rows = pts.to_pylist()
    found = []  # (key, scale, category, index, count)
    for i, p in enumerate(rows):
        prev = rows[i - 1] if i and rows[i - 1]["sidx"] == p["sidx"] else None
        if p["t"] < 0:
            continue
        key = int(gidx[p["sidx"]]) * N_BUCKETS + p["t"] // (STEP * S)
        whole = prev is None and p["st"] >= 0
        increments = {}
        if prev is not None:
            reset = (
                prev["st"] != p["st"] or prev["c"] > p["c"] or prev["exp_zero_count"] > p["exp_zero_count"]
            )
            scale = min(p["exp_scale"], prev["exp_scale"])
            cur, before = entries(p, scale), entries(prev, scale)
            increments = {k: cur.get(k, 0) - before.get(k, 0) for k in set(cur) | set(before)}
            whole = reset or min(increments.values()) < 0
        if whole:
            scale, increments = p["exp_scale"], entries(p, p["exp_scale"])
        found += [(key, scale, cat, idx, c) for (cat, idx), c in increments.items()]
    size = (int(gidx.max()) + 1) * N_BUCKETS
    columns = [np.array([f[i] for f in found], dtype=np.int64) for i in range(5)]
    return hist.grouped_quantile_exponential(*columns, size, q).reshape(-1, N_BUCKETS)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("q", [0.0, 0.3, 0.95, 1.0])
def test_exponential_percentile_equals_a_per_point_reference(seed, q):
    rng = np.random.default_rng(seed)
    n_series = int(rng.integers(1, 8))
    gidx = np.unique(rng.integers(0, 3, n_series), return_inverse=True)[1]
    pts = exponential_points(rng, n_series)
    actual = compute(context(pts, gidx), "exponential_histogram", "pNN", q, True)
    np.testing.assert_array_equal(actual, reference_exponential(pts, gidx, q))
