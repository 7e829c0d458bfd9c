"""Rollups: per-series summaries of fixed time windows, from which range queries can be answered.

A rollup row summarises the points of one series in one window ``[window_start, window_start +
window_ns)`` (a point on a boundary belongs to the later window, as in range queries). It keeps
what every range aggregation of ``docs/query.md`` needs, so a query whose step is a multiple of
the window gets the same answer from the rows as from the raw points:

- ``count, sum, min, max`` of the point values, and ``last`` with ``last_time_ns`` and
  ``last_start_time_ns`` (the newest point), ``first_time_ns`` (the oldest);
- ``increase``: the sum of the window's increments under the reset rule of
  ``otel_audio.store.query`` (``v - v_prev`` while the start time is unchanged and, for a
  monotonic value, ``v >= v_prev``; else ``v``). Sums: of the value; delta sums: the sum of the
  values; histograms and summaries: of the observation count, with ``sum_increase`` of their sum.
  Gauges have none;
- histograms: ``hist_min``/``hist_max`` (of the points' min/max fields) and the merged histogram
  of the window's increments: explicit bounds and summed bucket increments (``mixed_bounds`` when
  the bounds changed inside the window), or an exponential histogram merged exactly at the
  smallest scale among the increments (:mod:`otel_audio.store.histograms`).

Rows merge associatively (:func:`merge_rollups`): counts, sums and increases add, min/max take
the extremes, ``last`` comes from the row with the newest ``last_time_ns``, histograms merge. So
the 1-hour tier is built from the 1-minute one (:func:`rollup_rollups`) and equals the 1-hour
rollup of the raw points.

The first point of a series in a run needs the point before it. :func:`rollup` takes a
:class:`Carry` (the newest point of every series seen by the previous run) and returns the next
one, so consecutive runs give the same rows as one run over all the data (a window cut in two by
the runs gives two rows that :func:`merge_rollups` joins).

Gauge and sum points (most of them) take a plain path: windows by integer division and one
``reduceat`` per column over the runs of (series, window), with no histogram work; histogram and
summary series take the generic one, and merges and tables skip the histogram columns when no row
has one. Both give the same rows bit for bit (``_FAST = False`` sends everything the generic way).

Example::

    rows, carry = rollup(points, series, MINUTE_NS)            # first run, no history
    more, carry = rollup(next_points, series, MINUTE_NS, carry)
    hourly = rollup_rollups(pa.concat_tables([rows, more]), HOUR_NS)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import POINTS_SCHEMA, SERIES_SCHEMA, MetricType, Temporality
from otel_audio.store import histograms as hist
from otel_audio.store import rollup_hist as rh

MINUTE_NS = 60 * 10**9
HOUR_NS = 3600 * 10**9

ROLLUP_SCHEMA = pa.schema(
    [
        ("series_id", pa.uint64()),
        ("window_start_ns", pa.int64()),
        ("window_ns", pa.int64()),
        ("count", pa.int64()),  # points (gauge and sum points without a value are skipped)
        ("sum", pa.float64()),  # of the values (histograms, summaries: of their cumulative sum field)
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("last", pa.float64()),  # value of the newest point
        ("first_time_ns", pa.int64()),
        ("last_time_ns", pa.int64()),
        ("last_start_time_ns", pa.int64()),  # start time of the newest point
        ("increase", pa.float64()),  # sums: of the value; histograms/summaries: of the count; gauges null
        ("sum_increase", pa.float64()),  # histograms/summaries: increase of their sum; else null
        ("hist_min", pa.float64()),  # histograms: min of the points' min fields
        ("hist_max", pa.float64()),
        ("bounds", pa.list_(pa.float64())),  # explicit histograms: the newest point's bounds
        ("bucket_counts", pa.list_(pa.uint64())),  # summed increments, len(bounds) + 1
        ("mixed_bounds", pa.bool_()),  # explicit bounds changed inside the window
        ("exp_scale", pa.int32()),  # exponential histograms: merged increments
        ("exp_zero_count", pa.uint64()),
        ("exp_positive_offset", pa.int32()),
        ("exp_positive_counts", pa.list_(pa.uint64())),
        ("exp_negative_offset", pa.int32()),
        ("exp_negative_counts", pa.list_(pa.uint64())),
    ]
)

_GAUGE, _SUM, _HIST, _EXP, _SUMMARY = range(5)
_KIND_CODE = {
    MetricType.GAUGE.value: _GAUGE,
    MetricType.SUM.value: _SUM,
    MetricType.HISTOGRAM.value: _HIST,
    MetricType.EXPONENTIAL_HISTOGRAM.value: _EXP,
    MetricType.SUMMARY.value: _SUMMARY,
}
_FLOATS = ("sum", "min", "max", "last", "increase", "sum_increase", "hist_min", "hist_max")
_INTS = ("count", "first_time_ns", "last_time_ns", "last_start_time_ns")

# Rows without histograms (gauges, sums, summaries) skip the histogram machinery; tests turn this
# off to compare that plain path with the generic one.
_FAST = True


@dataclass(frozen=True)
class Carry:
    """What one :func:`rollup` run hands the next: the newest point of every series seen so far.

    Args:
        points: ``POINTS_SCHEMA`` rows, at most one per series.
        skipped_late: points of the last run dropped because they were not newer than their
            series' carried point (already rolled up windows cannot change).
    """

    points: pa.Table
    skipped_late: int = 0

    @classmethod
    def empty(cls) -> Carry:
        return cls(POINTS_SCHEMA.empty_table())


def rollup(
    points: pa.Table, series: pa.Table, window_ns: int, carry: Carry | None = None
) -> tuple[pa.Table, Carry]:
    """Roll ``points`` up into windows of ``window_ns``, one row per series and window with points.

    Args:
        points: ``POINTS_SCHEMA`` rows of any series and times, in any order. Points flagged "no
            recorded value" are ignored, as by queries.
        series: ``SERIES_SCHEMA`` rows of (at least) every series in ``points`` and ``carry``.
        window_ns: window width; windows start at multiples of it (since the Unix epoch).
        carry: the previous run's carry; ``None`` when there is no earlier data.

    Returns:
        ``(rows, carry)``: ``ROLLUP_SCHEMA`` rows sorted by series and window, and the carry for
        the next run.

    Raises:
        ValueError: ``window_ns`` not positive, or a point of a series missing from ``series``.
    """
    _check_window(window_ns)
    carry = carry or Carry.empty()
    n_carry = carry.points.num_rows
    # carry rows first: each precedes every kept point of its series and only serves as "previous"
    pts = pa.concat_tables([_conform(carry.points), _conform(points)])
    is_carry = np.r_[np.ones(n_carry, bool), np.zeros(points.num_rows, bool)]
    sid = _i(pts, "series_id", np.uint64)
    t = _i(pts, "time_unix_nano")
    kind, delta, monotonic = _series_info(series, sid)
    v = _f(pts, "value")
    keep = (_i(pts, "flags") & 1) == 0
    keep &= ~((kind <= _SUM) & np.isnan(v))
    late = _late(sid, t, is_carry) & keep
    keep &= ~late
    kept = np.flatnonzero(keep)
    # a stable sort: a carried point precedes the kept points of its time (only late ones share it)
    order = kept[np.lexsort((t[kept], sid[kept]))]
    sid, t, kind, delta, monotonic, v, is_carry = (
        a[order] for a in (sid, t, kind, delta, monotonic, v, is_carry)
    )
    if sid.size == 0:
        return ROLLUP_SCHEMA.empty_table(), Carry(carry.points, skipped_late=int(late.sum()))
    new_series = np.r_[True, sid[1:] != sid[:-1]]
    last_of_series = np.r_[np.flatnonzero(new_series)[1:], sid.size] - 1
    next_carry = Carry(pts.take(order[last_of_series]), skipped_late=int(late.sum()))
    own = ~is_carry
    if not own.any():
        return ROLLUP_SCHEMA.empty_table(), next_carry

    # gauges and sums (most points) take the plain path; series of other kinds the histogram one
    plain = kind <= _SUM if _FAST else np.zeros(sid.size, bool)
    parts = []
    if plain.any():
        sel = slice(None) if plain.all() else np.flatnonzero(plain)
        st = _i(pts, "start_time_unix_nano")[order[sel]]
        parts.append(
            _plain_rows(
                sid[sel],
                t[sel],
                st,
                v[sel],
                kind[sel] == _SUM,
                delta[sel],
                monotonic[sel],
                new_series[sel],
                is_carry[sel],
                window_ns,
            )
        )
    if not plain.all():
        sel = np.flatnonzero(~plain)
        if own[sel].any():
            points_rows = _point_rows(
                pts.take(order[sel]),
                sid[sel],
                t[sel],
                kind[sel],
                delta[sel],
                monotonic[sel],
                v[sel],
                ~new_series[sel],
            )
            points_rows.window_start = t[sel]  # _merge puts each point in the window holding its time
            parts.append(_to_table(_merge(points_rows, window_ns, 0, own[sel])))
    if len(parts) == 1:
        return parts[0], next_carry
    rows = pa.concat_tables(parts)
    by_series = np.lexsort((_i(rows, "window_start_ns"), _i(rows, "series_id", np.uint64)))
    return rows.take(by_series), next_carry


def merge_rollups(rollups: pa.Table, window_ns: int, origin_ns: int = 0) -> pa.Table:
    """Merge rollup rows into windows of ``window_ns`` starting at ``origin_ns + k * window_ns``.

    Each row goes to the window holding its ``window_start_ns``; rows of one series and window
    combine (counts, sums, increases add; min/max; ``last`` of the newest row; histograms merge).
    The result is exact when every row's window lies inside one new window (see
    :func:`rollup_rollups` for the checked form).
    """
    _check_window(window_ns)
    if rollups.num_rows == 0:
        return ROLLUP_SCHEMA.empty_table()
    return _to_table(_merge(_from_table(rollups), window_ns, origin_ns))


def rollup_rollups(rollups: pa.Table, window_ns: int) -> pa.Table:
    """Rows of a coarser tier (e.g. 1 h) from rows of a finer one (e.g. 1 min).

    Raises:
        ValueError: when ``window_ns`` is not a multiple of some row's ``window_ns``.
    """
    _check_window(window_ns)
    widths = np.unique(rollups.column("window_ns").to_numpy())
    bad = widths[window_ns % widths != 0] if widths.size else widths
    if bad.size:
        raise ValueError(
            f"cannot roll {int(bad[0])} ns windows up into {window_ns} ns windows: "
            "the new window must be a multiple of every row's window"
        )
    return merge_rollups(rollups, window_ns)


# -- rows in numpy form ----------------------------------------------------------------------------


@dataclass
class _Rows:
    """Rollup rows (or single points) as arrays; exponential histograms as sparse entries."""

    sid: np.ndarray
    window_start: np.ndarray
    window_ns: np.ndarray
    floats: dict[str, np.ndarray]  # NaN for null
    ints: dict[str, np.ndarray]
    has_bounds: np.ndarray  # explicit histograms
    bounds: rh.Lists
    has_counts: np.ndarray  # False: bounds known but counts unusable
    bucket_counts: rh.Lists
    mixed: np.ndarray
    is_exp: np.ndarray
    exp: tuple[np.ndarray, ...]  # (owner row, scale, category, index, count)


def _merge(rows: _Rows, window_ns: int, origin_ns: int, keep: np.ndarray | None = None) -> _Rows:
    """Rows (those of ``keep``, default all) merged per series and window."""
    window = origin_ns + np.floor_divide(rows.window_start - origin_ns, window_ns) * window_ns
    kept = np.flatnonzero(keep) if keep is not None else np.arange(rows.sid.size)
    order = kept[np.lexsort((rows.ints["last_time_ns"][kept], window[kept], rows.sid[kept]))]
    sid, win = rows.sid[order], window[order]
    new = np.r_[True, (sid[1:] != sid[:-1]) | (win[1:] != win[:-1])]
    starts = np.flatnonzero(new)
    last = np.r_[starts[1:], order.size] - 1
    n = starts.size
    gid = np.full(rows.sid.size, -1)
    gid[order] = np.cumsum(new) - 1
    f = {k: a[order] for k, a in rows.floats.items()}
    i = {k: a[order] for k, a in rows.ints.items()}
    valued = np.add.reduceat((~np.isnan(f["sum"])).astype(np.int64), starts) > 0
    floats = {
        "sum": np.where(valued, np.add.reduceat(np.nan_to_num(f["sum"], nan=0.0), starts), np.nan),
        "min": np.fmin.reduceat(f["min"], starts),
        "max": np.fmax.reduceat(f["max"], starts),
        "last": f["last"][last],
        "increase": np.add.reduceat(f["increase"], starts),
        "sum_increase": np.add.reduceat(f["sum_increase"], starts),
        "hist_min": np.fmin.reduceat(f["hist_min"], starts),
        "hist_max": np.fmax.reduceat(f["hist_max"], starts),
    }
    ints = {
        "count": np.add.reduceat(i["count"], starts),
        "first_time_ns": np.minimum.reduceat(i["first_time_ns"], starts),
        "last_time_ns": i["last_time_ns"][last],
        "last_start_time_ns": i["last_start_time_ns"][last],
    }
    if _FAST and not rows.has_bounds.any():
        has_bounds, has_counts, mixed = (np.zeros(n, bool) for _ in range(3))
        bounds, counts = rh.Lists.empty(n, np.float64), rh.Lists.empty(n, np.int64)
    else:
        # members in last_time order: the newest member's bounds are the row's bounds
        has_bounds, bounds, has_counts, counts, mixed = rh.merge_explicit(
            order, starts, rows.has_bounds, rows.bounds, rows.has_counts, rows.bucket_counts, rows.mixed
        )
    if _FAST and rows.exp[0].size == 0:
        group = group_scale = cat = index = count = np.zeros(0, np.int64)
    else:
        owner, scale, cat, index, count = (a[gid[rows.exp[0]] >= 0] for a in rows.exp)
        group_scale, group, cat, index, count = hist.grouped_merge_exponential(
            gid[owner], scale, cat, index, count, n
        )
    return _Rows(
        sid[starts],
        win[starts],
        np.full(n, window_ns, np.int64),
        floats,
        ints,
        has_bounds,
        bounds,
        has_counts,
        counts,
        mixed,
        np.logical_or.reduceat(rows.is_exp[order], starts),
        (group, group_scale[group], cat, index, count),
    )


def _point_rows(pts, sid, t, kind, delta, monotonic, v, has_prev) -> _Rows:
    """One row per point (sorted by series, time), with its increment against the previous point."""
    n = sid.size
    st = _i(pts, "start_time_unix_nano")
    c = _f(pts, "count", 0.0)
    is_sum = kind == _SUM
    x = np.where(is_sum, v, c)  # what counts: the value of sums, the observation count otherwise
    prev_x, prev_v, prev_st = np.roll(x, 1), np.roll(v, 1), np.roll(st, 1)
    reset = (st != prev_st) | ((~is_sum | monotonic) & (x < prev_x))
    diff = has_prev & ~reset & ~delta
    floats = {
        "sum": v.copy(),
        "min": v.copy(),
        "max": v.copy(),
        "last": v.copy(),
        "increase": np.where(kind == _GAUGE, np.nan, np.where(diff, x - prev_x, x)),
        "sum_increase": np.where(kind >= _HIST, np.where(diff, v - prev_v, v), np.nan),
        "hist_min": np.where(kind >= _HIST, _f(pts, "min"), np.nan),
        "hist_max": np.where(kind >= _HIST, _f(pts, "max"), np.nan),
    }
    ints = {"count": np.ones(n, np.int64), "first_time_ns": t, "last_time_ns": t, "last_start_time_ns": st}
    has_bounds, bounds, has_counts, counts = rh.explicit_increments(pts, kind == _HIST, diff)
    exp = rh.exponential_increments(pts, kind == _EXP, diff)
    unset = np.zeros(n, np.int64)  # windows are assigned by the caller
    return _Rows(
        sid,
        unset,
        unset,
        floats,
        ints,
        has_bounds,
        bounds,
        has_counts,
        counts,
        np.zeros(n, bool),
        kind == _EXP,
        exp,
    )


def _plain_rows(sid, t, st, v, is_sum, delta, monotonic, first, is_carry, window_ns: int) -> pa.Table:
    """Rollup rows of gauge and sum points sorted by (series, time), carried points leading their series.

    The rows :func:`_point_rows` and :func:`_merge` give, bit for bit, without the histogram work:
    the same reset rule on shifted values, the same ``reduceat`` sums over the same runs of values.
    """
    n = sid.size
    diff = np.zeros(n, bool)
    np.equal(st[1:], st[:-1], out=diff[1:])
    diff[1:] &= ~(monotonic[1:] & (v[1:] < v[:-1]))
    diff &= ~first & ~delta
    increase = v.copy()
    np.subtract(v[1:], v[:-1], out=increase[1:], where=diff[1:])
    increase[~is_sum] = np.nan
    window = np.floor_divide(t, window_ns) * window_ns
    # a carried point is a group of its own, dropped below: it only served as the previous point
    bound = first | is_carry
    bound[1:] |= is_carry[:-1] | (window[1:] != window[:-1])
    starts = np.flatnonzero(bound)
    own = ~is_carry[starts]
    first_pos = starts[own]
    last_pos = np.r_[starts[1:], n][own] - 1
    floats = {
        "sum": np.add.reduceat(v, starts)[own],
        "min": np.fmin.reduceat(v, starts)[own],
        "max": np.fmax.reduceat(v, starts)[own],
        "last": v[last_pos],
        "increase": np.add.reduceat(increase, starts)[own],
    }
    ints = {
        "count": last_pos - first_pos + 1,
        "first_time_ns": t[first_pos],
        "last_time_ns": t[last_pos],
        "last_start_time_ns": st[last_pos],
    }
    return _plain_table(sid[first_pos], window[first_pos], window_ns, floats, ints)


# -- table conversions -----------------------------------------------------------------------------


def _plain_table(sid, window_start, window_ns, floats: dict, ints: dict) -> pa.Table:
    """``ROLLUP_SCHEMA`` rows without histograms; float columns missing from ``floats`` are null."""
    n = sid.size
    columns = {
        "series_id": pa.array(sid, pa.uint64()),
        "window_start_ns": pa.array(window_start, pa.int64()),
        "window_ns": pa.array(np.broadcast_to(window_ns, n), pa.int64()),
        **{k: pa.array(ints[k], pa.int64()) for k in _INTS},
        **{k: pa.array(floats[k], pa.float64(), from_pandas=True) for k in floats},
    }
    return pa.table(
        [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in ROLLUP_SCHEMA],
        schema=ROLLUP_SCHEMA,
    )


def _to_table(rows: _Rows) -> pa.Table:
    n = rows.sid.size
    is_exp = rows.is_exp
    if _FAST and not (rows.has_bounds.any() or is_exp.any() or rows.exp[0].size):
        return _plain_table(rows.sid, rows.window_start, rows.window_ns, rows.floats, rows.ints)
    exp_scale, zero, sides = rh.dense_exponential(n, is_exp, rows.exp)

    def opt(values: np.ndarray, mask: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, mask=~mask, type=typ)

    counts_type = pa.list_(pa.uint64())
    columns = {
        "series_id": pa.array(rows.sid, pa.uint64()),
        "window_start_ns": pa.array(rows.window_start, pa.int64()),
        "window_ns": pa.array(rows.window_ns, pa.int64()),
        **{k: pa.array(rows.ints[k], pa.int64()) for k in _INTS},
        **{k: pa.array(a, pa.float64(), from_pandas=True) for k, a in rows.floats.items()},
        "bounds": rows.bounds.to_arrow(rows.has_bounds, pa.list_(pa.float64())),
        "bucket_counts": rows.bucket_counts.to_arrow(rows.has_counts, counts_type),
        "mixed_bounds": opt(rows.mixed, rows.has_bounds, pa.bool_()),
        "exp_scale": opt(exp_scale, is_exp, pa.int32()),
        "exp_zero_count": opt(zero, is_exp, pa.uint64()),
    }
    for cat, side in ((hist.POSITIVE, "positive"), (hist.NEGATIVE, "negative")):
        offsets, lists, valid = sides[cat]
        columns[f"exp_{side}_offset"] = opt(offsets, is_exp, pa.int32())
        columns[f"exp_{side}_counts"] = lists.to_arrow(valid, counts_type)
    return pa.table({name: columns[name] for name in ROLLUP_SCHEMA.names}, schema=ROLLUP_SCHEMA)


def _from_table(table: pa.Table) -> _Rows:
    table = table.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
    n = table.num_rows
    if _FAST and not _has_histograms(table):
        no = np.zeros(n, bool)
        floats, ints = {k: _f(table, k) for k in _FLOATS}, {k: _i(table, k) for k in _INTS}
        empty_floats, empty_ints = rh.Lists.empty(n, np.float64), rh.Lists.empty(n, np.int64)
        exp = tuple(np.zeros(0, np.int64) for _ in range(5))
        window_start, width = _i(table, "window_start_ns"), _i(table, "window_ns")
        sid = _i(table, "series_id", np.uint64)
        return _Rows(sid, window_start, width, floats, ints, no, empty_floats, no, empty_ints, no, no, exp)
    has_bounds = pc.is_valid(table.column("bounds")).to_numpy(zero_copy_only=False)
    counts_col = table.column("bucket_counts")
    has_counts = has_bounds & pc.is_valid(counts_col).to_numpy(zero_copy_only=False)
    is_exp = pc.is_valid(table.column("exp_scale")).to_numpy(zero_copy_only=False)
    return _Rows(
        table.column("series_id").to_numpy().astype(np.uint64),
        _i(table, "window_start_ns"),
        _i(table, "window_ns"),
        {k: _f(table, k) for k in _FLOATS},
        {k: _i(table, k) for k in _INTS},
        has_bounds,
        rh.Lists.of_column(table.column("bounds"), has_bounds, np.float64),
        has_counts,
        rh.Lists.of_column(counts_col, has_counts, np.int64),
        pc.fill_null(table.column("mixed_bounds"), False).to_numpy(zero_copy_only=False),
        is_exp,
        rh.exponential_entries_of_table(table, is_exp),
    )


def _has_histograms(table: pa.Table) -> bool:
    """Whether some row has explicit bounds, an exponential scale or exponential buckets."""
    if table.column("bounds").null_count < table.num_rows:
        return True
    if table.column("exp_scale").null_count < table.num_rows:
        return True
    return any(
        (pc.sum(pc.list_value_length(table.column(f"exp_{side}_counts"))).as_py() or 0) > 0
        for side in ("positive", "negative")
    )


# -- helpers ---------------------------------------------------------------------------------------


def _check_window(window_ns: int) -> None:
    if not isinstance(window_ns, int | np.integer) or window_ns <= 0:
        raise ValueError(f"window_ns must be a positive integer number of nanoseconds, got {window_ns!r}")


def _conform(points: pa.Table) -> pa.Table:
    return points.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)


def _f(table: pa.Table, name: str, fill: float = np.nan) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy().astype(np.float64, copy=False)


def _i(table: pa.Table, name: str, dtype=np.int64) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, 0)
    return column.to_numpy().astype(dtype, copy=False)


def _late(sid: np.ndarray, t: np.ndarray, is_carry: np.ndarray) -> np.ndarray:
    """Points not newer than the carried point of their series."""
    carry_sid, carry_t = sid[is_carry], t[is_carry]
    if carry_sid.size == 0:
        return np.zeros(sid.size, bool)
    order = np.argsort(carry_sid)
    carry_sid, carry_t = carry_sid[order], carry_t[order]
    pos = np.minimum(np.searchsorted(carry_sid, sid), carry_sid.size - 1)
    return ~is_carry & (carry_sid[pos] == sid) & (t <= carry_t[pos])


def _series_info(series: pa.Table, sid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind code, delta, monotonic) of each point's series."""
    series = series.select(["series_id", "type", "temporality", "monotonic"]).cast(
        pa.schema([SERIES_SCHEMA.field(n) for n in ("series_id", "type", "temporality", "monotonic")])
    )
    known = series.column("series_id").to_numpy().astype(np.uint64)
    order = np.argsort(known)
    known = known[order]
    types = np.asarray(series.column("type").to_pylist(), dtype=object)[order]
    unknown_types = sorted(set(types.tolist()) - set(_KIND_CODE))
    if unknown_types:
        raise ValueError(f"unknown metric type {unknown_types[0]!r}; accepted: {', '.join(_KIND_CODE)}")
    kind = np.array([_KIND_CODE[x] for x in types], np.int8)
    delta = np.asarray(series.column("temporality").to_pylist(), object)[order] == Temporality.DELTA.value
    monotonic = pc.fill_null(series.column("monotonic"), False).to_numpy(zero_copy_only=False)[order]
    pos = np.minimum(np.searchsorted(known, sid), max(known.size - 1, 0))
    missing = (known[pos] != sid) if known.size else np.ones(sid.size, bool)
    if missing.any():
        raise ValueError(f"series {int(sid[missing][0])} has points but no row in the series table")
    return kind[pos], delta[pos].astype(bool), monotonic[pos].astype(bool)
