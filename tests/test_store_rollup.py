"""Rollups: rows equal brute-force aggregates of the raw points; they merge associatively; carry.

``dataset`` (also used by the tier tests) draws a few series of one kind with random times and
values: gauges, cumulative counters with restarts and drops, up-down counters, delta sums, explicit
and exponential histograms (cumulative and delta, scales changing between points) and summaries.
``brute_force`` computes the expected rows point by point in plain Python.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store import histograms as hist
from otel_audio.store import rollup as rollup_module
from otel_audio.store.rollup import (
    HOUR_NS,
    MINUTE_NS,
    ROLLUP_SCHEMA,
    Carry,
    merge_rollups,
    rollup,
    rollup_rollups,
)
from tests.test_store_memory import S, metric_batch, series

KINDS = (
    "gauge",
    "counter",
    "updown",
    "delta",
    "explicit",
    "explicit_delta",
    "exponential",
    "exponential_delta",
    "summary",
)
BOUNDS = [1.0, 5.0, 10.0]


def _series_row(kind: str, i: int) -> dict:
    attrs = {"i": i}
    if kind == "gauge":
        return series("m", attributes=attrs)
    if kind in ("counter", "updown", "delta"):
        temporality = "delta" if kind == "delta" else "cumulative"
        return series("m", "sum", attrs, temporality=temporality, monotonic=kind != "updown")
    temporality = "delta" if kind.endswith("_delta") else "cumulative"
    type_ = {"explicit": "histogram", "exponential": "exponential_histogram", "summary": "summary"}
    return series("m", type_[kind.removesuffix("_delta")], attrs, temporality=temporality)


def make_points(kind: str, s: dict, times_ns: list[int], rng: np.random.Generator) -> list[dict]:
    """Points of series ``s`` at ``times_ns`` (sorted), their values drawn from ``rng``."""
    out, start, prev_t = [], 0, 0
    value, counts, observed = 0.0, np.zeros(len(BOUNDS) + 1, np.int64), np.zeros(0)
    delta = kind == "delta" or kind.endswith("_delta")
    for t in times_ns:
        restart = rng.random() < 0.15
        if delta:
            start = prev_t
        elif restart:
            start = int(rng.integers(prev_t, t + 1))
        p = {"s": s, "time_unix_nano": t, "start_time_unix_nano": start}
        if kind == "gauge":
            p["value"] = float(rng.integers(-400, 400)) / 4
        elif kind in ("counter", "updown", "delta"):
            if delta or restart:
                value = 0.0
            if kind == "updown":
                value += float(rng.integers(-20, 21)) / 4
            elif kind == "counter" and not restart and rng.random() < 0.05:
                value = float(rng.integers(0, max(int(value), 1)))  # drops without a new start time
            else:
                value += float(rng.integers(0, 40)) / 4
            p["value"] = value
        elif kind in ("explicit", "explicit_delta", "summary"):
            if delta or restart:
                counts[:], value = 0, 0.0
            counts += rng.integers(0, 3, counts.size)
            value += float(rng.integers(0, 100)) / 4
            p.update(value=value, count=int(counts.sum()))
            if kind == "summary":
                p.update(quantiles=[0.5], quantile_values=[value / 2])
            else:
                p.update(bounds=BOUNDS, bucket_counts=counts.tolist(), min=-1.0 * len(out), max=float(t % 97))
        else:
            if delta or restart:
                observed = np.zeros(0)
            new = np.round(rng.normal(0, 50, int(rng.integers(0, 6))), 2)
            new[rng.random(new.size) < 0.1] = 0.0
            observed = np.r_[observed, new]
            h = hist.exponential_histogram(
                observed, int(rng.integers(0, 5)), max_buckets=int(rng.integers(4, 40))
            )
            p.update(
                value=float(observed.sum()),
                count=observed.size,
                min=float(observed.min()) if observed.size else None,
                max=float(observed.max()) if observed.size else None,
                exp_scale=h.scale,
                exp_zero_count=h.zero_count,
                exp_positive_offset=h.positive_offset,
                exp_positive_counts=h.positive_counts.tolist(),
                exp_negative_offset=h.negative_offset,
                exp_negative_counts=h.negative_counts.tolist(),
            )
        if rng.random() < 0.05:  # "no recorded value": every reader ignores it
            out.append({**p, "flags": 1, "time_unix_nano": t - 1, "value": float("nan")})
        out.append(p)
        prev_t = t
    return out


@st.composite
def dataset(draw, kinds=KINDS, span_s: int = 4 * 3600, max_points: int = 25):
    """(kind, MetricBatch): 1-3 series of one kind, times unique across series."""
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, pts = [], []
    for i in range(draw(st.integers(1, 3))):
        seconds = draw(st.lists(st.integers(1, span_s - 1), min_size=1, max_size=max_points, unique=True))
        s = _series_row(kind, i)
        rows.append(s)
        pts += make_points(kind, s, [t * S + i for t in sorted(seconds)], rng)
    order = rng.permutation(len(pts))  # rollup takes points in any order
    return kind, metric_batch(rows, [pts[k] for k in order])


# -- the reference ---------------------------------------------------------------------------------


def _exp_dict(p: dict) -> tuple[int, dict]:
    d = {(hist.ZERO, 0): p.get("exp_zero_count") or 0}
    for cat, side in ((hist.POSITIVE, "positive"), (hist.NEGATIVE, "negative")):
        for k, c in enumerate(p.get(f"exp_{side}_counts") or []):
            d[(cat, p[f"exp_{side}_offset"] + k)] = c
    return p.get("exp_scale") or 0, d


def _down(d: dict, by: int) -> dict:
    out: dict = defaultdict(int)
    for (cat, idx), c in d.items():
        out[(cat, idx if cat == hist.ZERO else idx >> by)] += c
    return dict(out)


def brute_force(batch, window_ns: int) -> dict[tuple[int, int], dict]:
    """Expected rollup rows by (series_id, window_start), computed point by point."""
    info = {r["series_id"]: r for r in batch.series.to_pylist()}
    by_series = defaultdict(list)
    for p in batch.points.to_pylist():
        if not (p["flags"] or 0) & 1:
            by_series[p["series_id"]].append(p)
    rows: dict[tuple[int, int], dict] = {}
    for sid, pts in by_series.items():
        s = info[sid]
        pts.sort(key=lambda p: p["time_unix_nano"])
        delta, is_sum = s["temporality"] == "delta", s["type"] == "sum"
        prev = None
        for p in pts:
            x = p["value"] if is_sum else p["count"]
            counted = (
                not delta and prev is not None and p["start_time_unix_nano"] == prev["start_time_unix_nano"]
            )
            if s["type"] == "gauge":
                counted = False
            elif counted and (s["monotonic"] or not is_sum):
                counted = x >= (prev["value"] if is_sum else prev["count"])
            key = (sid, p["time_unix_nano"] // window_ns * window_ns)
            r = rows.setdefault(key, {"values": [], "points": [], "inc": 0.0, "sum_inc": 0.0, "exp": []})
            r["values"].append(p["value"])
            r["points"].append(p)
            if s["type"] != "gauge":
                r["inc"] += x - (prev["value"] if is_sum else prev["count"]) if counted else x
            if s["type"] not in ("gauge", "sum"):
                r["sum_inc"] += p["value"] - prev["value"] if counted else p["value"]
            if s["type"] == "histogram":
                m = np.array(p["bucket_counts"])
                if counted and prev["bounds"] == p["bounds"] and (m >= prev["bucket_counts"]).all():
                    m = m - prev["bucket_counts"]
                r["buckets"] = r.get("buckets", 0) + m
            if s["type"] == "exponential_histogram":
                scale, d = _exp_dict(p)
                if counted:
                    p_scale, p_d = _exp_dict(prev)
                    low = min(scale, p_scale)
                    a, b = _down(d, scale - low), _down(p_d, p_scale - low)
                    diff = {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()}
                    if min(diff.values()) >= 0:
                        scale, d = low, diff
                r["exp"].append((scale, d))
            prev = p
    for (_sid, _w), r in rows.items():
        valued = [v for v in r["values"] if v is not None and not math.isnan(v)]
        last = r["points"][-1]
        r.update(
            count=len(r["points"]),
            sum=sum(valued) if valued else None,
            min=min(valued) if valued else None,
            max=max(valued) if valued else None,
            last=last["value"],
            first_time_ns=r["points"][0]["time_unix_nano"],
            last_time_ns=last["time_unix_nano"],
            last_start_time_ns=last["start_time_unix_nano"],
        )
        positive = [(sc, d) for sc, d in r["exp"] if any(c > 0 for c in d.values())]
        if positive:
            low = min(sc for sc, _ in positive)
            merged: dict = defaultdict(int)
            for sc, d in positive:
                for k, c in _down(d, sc - low).items():
                    merged[k] += c
            r["exp_merged"] = (low, {k: c for k, c in merged.items() if c})
    return rows


def row_exp(row: dict) -> tuple[int, dict]:
    scale, d = _exp_dict(row)
    return scale, {k: c for k, c in d.items() if c}


def assert_rows_match(table: pa.Table, expected: dict, kind: str) -> None:
    got = {(r["series_id"], r["window_start_ns"]): r for r in table.to_pylist()}
    assert got.keys() == expected.keys()
    for key, r in got.items():
        e = expected[key]
        for name in ("count", "first_time_ns", "last_time_ns", "last_start_time_ns"):
            assert r[name] == e[name], name
        for name in ("sum", "min", "max", "last"):
            assert (
                r[name] == pytest.approx(e[name], rel=1e-12, abs=1e-9)
                if e[name] is not None
                else r[name] is None
            )
        if kind == "gauge":
            assert r["increase"] is None
        else:
            assert r["increase"] == pytest.approx(e["inc"], abs=1e-9)
        if kind.startswith(("explicit", "exponential", "summary")):
            assert r["sum_increase"] == pytest.approx(e["sum_inc"], abs=1e-9)
        if kind.startswith("explicit"):
            assert r["bounds"] == BOUNDS
            assert r["bucket_counts"] == e["buckets"].tolist()
            assert r["hist_min"] == min(p["min"] for p in e["points"])
        if kind.startswith("exponential"):
            if "exp_merged" in e:
                assert row_exp(r) == e["exp_merged"]
            else:
                assert row_exp(r)[1] == {}


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=dataset(), window_ns=st.sampled_from([MINUTE_NS, 10 * MINUTE_NS, HOUR_NS]))
def test_rollup_rows_equal_brute_force_aggregates_of_the_raw_points(data, window_ns):
    kind, batch = data
    rows, _ = rollup(batch.points, batch.series, window_ns)
    assert rows.schema == ROLLUP_SCHEMA
    assert_rows_match(rows, brute_force(batch, window_ns), kind)


@settings(max_examples=100, deadline=None)
@given(data=dataset(span_s=3 * 3600, max_points=40))
def test_hour_rows_from_minute_rows_equal_hour_rows_from_raw(data):
    _, batch = data
    minutes, _ = rollup(batch.points, batch.series, MINUTE_NS)
    from_raw, _ = rollup(batch.points, batch.series, HOUR_NS)
    assert_tables_match(rollup_rollups(minutes, HOUR_NS), from_raw)


@settings(max_examples=100, deadline=None)
@given(data=dataset(), cut_s=st.integers(0, 4 * 3600), window_ns=st.sampled_from([MINUTE_NS, HOUR_NS]))
def test_two_runs_with_carry_equal_one_run(data, cut_s, window_ns):
    _, batch = data
    t = batch.points.column("time_unix_nano").to_numpy()
    first = batch.points.filter(pa.array(t < cut_s * S))
    second = batch.points.filter(pa.array(t >= cut_s * S))
    rows1, carry = rollup(first, batch.series, window_ns)
    rows2, carry = rollup(second, batch.series, window_ns, carry)
    whole, whole_carry = rollup(batch.points, batch.series, window_ns)
    # a window cut by the runs has a row from each; merging them gives the one-run row
    assert_tables_match(merge_rollups(pa.concat_tables([rows1, rows2]), window_ns), whole)
    assert carry.points.sort_by("series_id").equals(whole_carry.points.sort_by("series_id"))


def assert_tables_match(actual: pa.Table, expected: pa.Table) -> None:
    keys = [("series_id", "ascending"), ("window_start_ns", "ascending")]
    a, e = actual.sort_by(keys).to_pylist(), expected.sort_by(keys).to_pylist()
    assert len(a) == len(e)
    for ra, re_ in zip(a, e, strict=True):
        for name, value in re_.items():
            if isinstance(value, float):
                assert ra[name] == pytest.approx(value, rel=1e-12, abs=1e-9), name
            else:
                assert ra[name] == value, name


# -- examples --------------------------------------------------------------------------------------

COUNTER = series("requests", "sum", temporality="cumulative", monotonic=True)


def counter_points(*rows: tuple) -> list[dict]:
    """(time_s, value, start_s) rows of COUNTER."""
    return [
        {"s": COUNTER, "time_unix_nano": t * S, "value": v, "start_time_unix_nano": st * S}
        for t, v, st in rows
    ]


def test_counter_increase_follows_the_query_reset_rule():
    # docs/query.md's example: a restart at 30 s counts the new value whole
    batch = metric_batch(
        [COUNTER], counter_points((5, 10, 0), (15, 15, 0), (25, 20, 0), (35, 3, 30), (45, 8, 30))
    )
    rows, carry = rollup(batch.points, batch.series, 10 * S)
    assert rows.column("increase").to_pylist() == [10, 5, 5, 3, 5]
    assert rows.column("last_start_time_ns").to_pylist() == [0, 0, 0, 30 * S, 30 * S]
    assert carry.points.column("value").to_pylist() == [8]


def test_first_point_without_history_counts_whole_and_with_carry_counts_its_difference():
    batch = metric_batch([COUNTER], counter_points((5, 10, 0)))
    _, carry = rollup(batch.points, batch.series, 10 * S)
    later = metric_batch([COUNTER], counter_points((15, 14, 0)))
    assert rollup(later.points, later.series, 10 * S)[0].column("increase").to_pylist() == [14]
    assert rollup(later.points, later.series, 10 * S, carry)[0].column("increase").to_pylist() == [4]


def test_points_not_newer_than_the_carry_are_skipped_and_counted():
    batch = metric_batch([COUNTER], counter_points((15, 10, 0)))
    _, carry = rollup(batch.points, batch.series, 10 * S)
    late = metric_batch([COUNTER], counter_points((5, 1, 0), (15, 10, 0), (25, 12, 0)))
    rows, carry = rollup(late.points, late.series, 10 * S, carry)
    assert rows.column("window_start_ns").to_pylist() == [20 * S]
    assert rows.column("increase").to_pylist() == [2]
    assert carry.skipped_late == 2


def test_points_without_a_recorded_value_are_ignored():
    g = series("g")
    batch = metric_batch(
        [g],
        [
            {"s": g, "time_unix_nano": 1 * S, "value": 1.0},
            {"s": g, "time_unix_nano": 2 * S, "value": 99.0, "flags": 1},
            {"s": g, "time_unix_nano": 3 * S, "value": float("nan")},
        ],
    )
    (row,) = rollup(batch.points, batch.series, MINUTE_NS)[0].to_pylist()
    assert (row["count"], row["max"], row["last"], row["increase"]) == (1, 1.0, 1.0, None)


def test_delta_sum_increase_is_the_sum_of_values():
    d = series("d", "sum", temporality="delta", monotonic=True)
    pts = [
        {"s": d, "time_unix_nano": t * S, "value": v, "start_time_unix_nano": (t - 1) * S}
        for t, v in ((1, 2.0), (2, 3.0))
    ]
    batch = metric_batch([d], pts)
    assert rollup(batch.points, batch.series, MINUTE_NS)[0].column("increase").to_pylist() == [5.0]


def test_explicit_bounds_changing_inside_a_window_are_marked_mixed():
    h = series("h", "histogram", temporality="delta")
    pts = [
        {"s": h, "time_unix_nano": 1 * S, "count": 1, "value": 1.0, "bounds": [1.0], "bucket_counts": [1, 0]},
        {"s": h, "time_unix_nano": 2 * S, "count": 1, "value": 1.0, "bounds": [2.0], "bucket_counts": [0, 1]},
    ]
    batch = metric_batch([h], pts)
    (row,) = rollup(batch.points, batch.series, MINUTE_NS)[0].to_pylist()
    assert (row["bounds"], row["bucket_counts"], row["mixed_bounds"]) == ([2.0], [0, 1], True)


def test_empty_input_gives_no_rows_and_keeps_the_carry():
    batch = metric_batch([COUNTER], counter_points((5, 10, 0)))
    _, carry = rollup(batch.points, batch.series, MINUTE_NS)
    rows, again = rollup(batch.points.slice(0, 0), batch.series, MINUTE_NS, carry)
    assert rows.num_rows == 0 and rows.schema == ROLLUP_SCHEMA
    assert again.points.equals(carry.points)
    assert rollup(batch.points.slice(0, 0), batch.series, MINUTE_NS)[1].points.num_rows == 0
    assert isinstance(Carry.empty(), Carry)


def test_rollup_rejects_points_of_unknown_series():
    batch = metric_batch([COUNTER], counter_points((5, 10, 0)))
    with pytest.raises(ValueError, match=r"series \d+ has points but no row in the series table"):
        rollup(batch.points, batch.series.slice(0, 0), MINUTE_NS)


@pytest.mark.parametrize("window", [0, -5, 1.5])
def test_rollup_rejects_a_bad_window(window):
    batch = metric_batch([COUNTER], counter_points((5, 10, 0)))
    with pytest.raises(ValueError, match="window_ns must be a positive integer"):
        rollup(batch.points, batch.series, window)


def test_rollup_rollups_needs_a_multiple_of_the_row_window():
    batch = metric_batch([COUNTER], counter_points((5, 10, 0)))
    rows, _ = rollup(batch.points, batch.series, MINUTE_NS)
    with pytest.raises(ValueError, match="new window must be a multiple"):
        rollup_rollups(rows, 90 * S)


HIST = series("h", "histogram", temporality="cumulative")
EXP = series("e", "exponential_histogram", temporality="cumulative")


def hist_points(*rows: tuple) -> list[dict]:
    """(time_s, bounds, bucket_counts) rows of HIST, all started at 0; count is the true count."""
    return [
        {"s": HIST, "time_unix_nano": t * S, "start_time_unix_nano": 0, "value": 0.0}
        | {"count": t * 10, "bounds": b, "bucket_counts": c}
        for t, b, c in rows
    ]


def exp_points(*rows: tuple) -> list[dict]:
    """(time_s, scale, zero_count, positive_offset, positive_counts) rows of EXP, started at 0."""
    return [
        {"s": EXP, "time_unix_nano": t * S, "start_time_unix_nano": 0, "value": 0.0, "count": t * 10}
        | {"exp_scale": sc, "exp_zero_count": z, "exp_positive_offset": o, "exp_positive_counts": c}
        for t, sc, z, o, c in rows
    ]


def test_cumulative_histogram_counts_whole_after_its_bounds_change_and_its_window_is_mixed():
    batch = metric_batch(
        [HIST],
        hist_points(
            (1, [1.0], [1, 1]), (2, [1.0], [2, 3]), (3, [1.0, 2.0], [2, 3, 4]), (4, [1.0, 2.0], [2, 4, 5])
        ),
    )
    seconds, _ = rollup(batch.points, batch.series, S)
    assert seconds.column("bucket_counts").to_pylist() == [[1, 1], [1, 2], [2, 3, 4], [0, 1, 1]]
    assert seconds.column("mixed_bounds").to_pylist() == [False] * 4
    minute, _ = rollup(batch.points, batch.series, MINUTE_NS)
    (row,) = minute.to_pylist()
    assert (row["bounds"], row["bucket_counts"], row["mixed_bounds"]) == ([1.0, 2.0], [2, 4, 5], True)
    assert_tables_match(rollup_rollups(seconds, MINUTE_NS), minute)


def test_histogram_bucket_going_down_is_a_reset_even_when_the_count_goes_up():
    batch = metric_batch([HIST], hist_points((1, [1.0], [2, 2]), (2, [1.0], [1, 4])))
    rows, _ = rollup(batch.points, batch.series, S)
    assert rows.column("bucket_counts").to_pylist() == [[2, 2], [1, 4]]


def test_histogram_points_without_usable_bucket_counts_are_left_out_and_the_next_counts_whole():
    batch = metric_batch(
        [HIST], hist_points((1, [1.0], [1, 1]), (2, [1.0], None), (3, [1.0], [1, 2, 3]), (4, [1.0], [3, 3]))
    )
    seconds, _ = rollup(batch.points, batch.series, S)
    assert seconds.column("bucket_counts").to_pylist() == [[1, 1], None, None, [3, 3]]
    minute, _ = rollup(batch.points, batch.series, MINUTE_NS)
    assert minute.column("bucket_counts").to_pylist() == [[4, 4]]
    assert_tables_match(rollup_rollups(seconds, MINUTE_NS), minute)


def test_exponential_increment_is_taken_at_the_smaller_scale_of_the_two_points():
    # scale 1 buckets 0 and 1 are bucket 0 at scale 0: 3 - 2 = 1
    batch = metric_batch([EXP], exp_points((1, 1, 0, 0, [1, 1]), (2, 0, 0, 0, [3])))
    rows, _ = rollup(batch.points, batch.series, S)
    second = rows.to_pylist()[1]
    assert (second["exp_scale"], second["exp_positive_offset"], second["exp_positive_counts"]) == (0, 0, [1])


def test_exponential_zero_count_going_down_is_a_reset():
    batch = metric_batch([EXP], exp_points((1, 0, 3, 0, [1]), (2, 0, 2, 0, [2])))
    rows, _ = rollup(batch.points, batch.series, S)
    assert rows.column("exp_zero_count").to_pylist() == [3, 2]
    assert rows.column("exp_positive_counts").to_pylist() == [[1], [2]]


def test_exponential_null_bucket_lists_are_empty():
    batch = metric_batch([EXP], exp_points((1, 0, 1, 4, [2]), (2, 0, 5, None, None)))
    rows, _ = rollup(batch.points, batch.series, S)
    # the positive bucket went from 2 to nothing: a reset, the point counts whole
    assert rows.column("exp_zero_count").to_pylist() == [1, 5]
    assert rows.column("exp_positive_counts").to_pylist() == [[2], []]
    minute, _ = rollup(batch.points, batch.series, MINUTE_NS)
    assert_tables_match(rollup_rollups(rows, MINUTE_NS), minute)


# -- the plain path (gauges, sums) equals the generic one bit for bit -------------------------------

PLAIN_KINDS = ("gauge", "counter", "updown", "delta")


@contextmanager
def generic_path():
    """Every point through the histogram-capable path, as before the plain one existed."""
    rollup_module._FAST = False
    try:
        yield
    finally:
        rollup_module._FAST = True


@st.composite
def plain_dataset(draw, mixed: bool = False):
    """A MetricBatch of 1-4 gauge and sum series (and, ``mixed``, histogram-like ones too) whose
    points may repeat a time, have NaN values or no recorded value, and span many windows."""
    kinds = PLAIN_KINDS + (KINDS[4:] if mixed else ())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, pts = [], []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        n = draw(st.integers(1, 300))
        span_s = draw(st.sampled_from([120, 3600, 6 * 3600]))
        seconds = np.sort(rng.integers(0, span_s, n))  # repeats: duplicate timestamps
        s = _series_row(kind, i)
        rows.append(s)
        for p in make_points(kind, s, [int(t) * S for t in seconds], rng):
            if kind in PLAIN_KINDS and rng.random() < 0.05:
                p = {**p, "value": float("nan")}
            pts.append(p)
    order = rng.permutation(len(pts))
    return metric_batch(rows, [pts[k] for k in order])


def assert_identical(actual: pa.Table, expected: pa.Table) -> None:
    """Same schema, rows, order, nulls and, for floats, the same bits (-0.0 is not 0.0)."""
    assert actual.schema == expected.schema
    assert actual.num_rows == expected.num_rows
    for name in expected.schema.names:
        a, e = actual.column(name), expected.column(name)
        assert a.equals(e), name
        if pa.types.is_floating(e.type):
            bits = [pc.fill_null(c, 0.0).to_numpy().view(np.int64) for c in (a, e)]
            assert np.array_equal(*bits), name


def _both_paths(fn):
    fast = fn()
    with generic_path():
        generic = fn()
    return fast, generic


@settings(max_examples=150, deadline=None)
@given(
    batch=plain_dataset(mixed=False) | plain_dataset(mixed=True),
    window_ns=st.sampled_from([S, MINUTE_NS, HOUR_NS]),
)
def test_plain_path_equals_the_generic_path(batch, window_ns):
    (rows, carry), (expected, expected_carry) = _both_paths(
        lambda: rollup(batch.points, batch.series, window_ns)
    )
    assert_identical(rows, expected)
    assert carry.points.equals(expected_carry.points)
    assert carry.skipped_late == expected_carry.skipped_late


@settings(max_examples=150, deadline=None)
@given(
    batch=plain_dataset(mixed=False) | plain_dataset(mixed=True),
    cut=st.floats(0, 1),
    overlap=st.floats(0, 0.5),
    window_ns=st.sampled_from([MINUTE_NS, HOUR_NS]),
)
def test_plain_path_equals_the_generic_path_across_runs_with_late_points(batch, cut, overlap, window_ns):
    t = batch.points.column("time_unix_nano").to_numpy()
    lo, hi = int(t.min()), int(t.max())
    cut_ns = lo + int((hi - lo) * cut)
    first = batch.points.filter(pa.array(t < cut_ns))
    # the second run repeats some of the first run's points: late against the carry
    second = batch.points.filter(pa.array(t >= cut_ns - int((hi - lo) * overlap)))

    def runs():
        rows1, carry = rollup(first, batch.series, window_ns)
        rows2, carry = rollup(second, batch.series, window_ns, carry)
        return rows1, rows2, carry

    (rows1, rows2, carry), (exp1, exp2, expected_carry) = _both_paths(runs)
    assert_identical(rows1, exp1)
    assert_identical(rows2, exp2)
    assert carry.points.equals(expected_carry.points)
    assert carry.skipped_late == expected_carry.skipped_late


@settings(max_examples=100, deadline=None)
@given(batch=plain_dataset(mixed=False) | plain_dataset(mixed=True), cut=st.floats(0, 1))
def test_plain_merges_equal_the_generic_merges(batch, cut):
    t = batch.points.column("time_unix_nano").to_numpy()
    cut_ns = int(t.min() + (t.max() - t.min()) * cut)
    rows1, carry = rollup(batch.points.filter(pa.array(t < cut_ns)), batch.series, MINUTE_NS)
    rows2, _ = rollup(batch.points.filter(pa.array(t >= cut_ns)), batch.series, MINUTE_NS, carry)
    minutes = pa.concat_tables([rows1, rows2])
    for fn in (
        lambda: merge_rollups(minutes, MINUTE_NS),
        lambda: rollup_rollups(minutes, HOUR_NS),
        lambda: merge_rollups(minutes, 5 * MINUTE_NS, 7 * S),
    ):
        assert_identical(*_both_paths(fn))


def test_plain_path_keeps_many_points_of_one_window_bit_for_bit():
    # enough points per window that the sums are pairwise, not sequential
    g, c = series("g"), series("c", "sum", temporality="cumulative", monotonic=True)
    rng = np.random.default_rng(7)
    pts = [
        {"s": g, "time_unix_nano": k * 10**7, "value": float(x)} for k, x in enumerate(rng.normal(size=1000))
    ]
    pts += [
        {"s": c, "time_unix_nano": k * 10**7, "value": float(x), "start_time_unix_nano": 0}
        for k, x in enumerate(np.cumsum(rng.random(1000) * 0.1))
    ]
    batch = metric_batch([g, c], pts)
    assert_identical(*(r[0] for r in _both_paths(lambda: rollup(batch.points, batch.series, MINUTE_NS))))


def test_negative_zero_survives_the_plain_path():
    g = series("g")
    batch = metric_batch(
        [g], [{"s": g, "time_unix_nano": S, "value": -0.0}, {"s": g, "time_unix_nano": 2 * S, "value": 0.0}]
    )
    rows, _ = rollup(batch.points, batch.series, MINUTE_NS)
    with generic_path():
        expected, _ = rollup(batch.points, batch.series, MINUTE_NS)
    assert_identical(rows, expected)
