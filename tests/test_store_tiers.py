"""Tiers: which tier a query reads, and rollup answers equal the raw QueryEngine's on the same points."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import QueryEngine, QueryError, RangeQuery
from otel_audio.store.retention import RetentionConfig
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, rollup, rollup_rollups
from otel_audio.store.tiers import (
    DAY_NS,
    HOUR,
    MINUTE,
    RAW,
    answerable_from_rollups,
    choose_tier,
    range_from_rollups,
)
from tests.test_store_memory import S, metric_batch, series
from tests.test_store_rollup import COUNTER, counter_points, dataset

SPAN_NS = 4 * HOUR_NS
TYPE = {
    "gauge": "gauge",
    "counter": "sum",
    "updown": "sum",
    "delta": "sum",
    "explicit": "histogram",
    "explicit_delta": "histogram",
    "exponential": "exponential_histogram",
    "exponential_delta": "exponential_histogram",
    "summary": "summary",
}
AGGS = {
    "gauge": ["avg", "min", "max", "sum", "count", "last"],
    "sum": ["avg", "min", "max", "sum", "count", "last", "rate", "increase"],
    "histogram": ["count", "sum", "avg", "min", "max", "rate", "increase", "p50", "p95", "p99.9"],
    "summary": ["count", "sum", "avg", "rate", "increase"],
}
AGGS["exponential_histogram"] = AGGS["histogram"]


def raw_answer(batch, q: RangeQuery) -> np.ndarray:
    store = MemoryStore()
    store.process(batch)
    results = QueryEngine(store, lookback_ns=30 * DAY_NS).query_range(q)
    return results[0].values if results else np.full(len(range(q.start_ns, q.end_ns, q.step_ns)), np.nan)


def assert_same(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


# -- answers equal the raw query -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    data=dataset(span_s=SPAN_NS // S),
    tier_step=st.sampled_from([(MINUTE_NS, 1), (MINUTE_NS, 5), (MINUTE_NS, 30), (HOUR_NS, 1), (HOUR_NS, 2)]),
    pick=st.data(),
)
def test_range_from_rollups_equals_the_raw_query_on_the_same_points(data, tier_step, pick):
    kind, batch = data
    window, k = tier_step
    agg = pick.draw(st.sampled_from(AGGS[TYPE[kind]]))
    q = RangeQuery("m", 0, SPAN_NS, window * k, agg=agg)
    rows, _ = rollup(batch.points, batch.series, window)
    result = range_from_rollups(rows, q, TYPE[kind])
    assert result.timestamps_ns.tolist() == list(range(0, SPAN_NS, window * k))
    assert_same(result.values, raw_answer(batch, q))


@settings(max_examples=100, deadline=None)
@given(
    data=dataset(kinds=("counter", "updown", "delta", "gauge", "explicit", "exponential", "summary")),
    cuts=st.tuples(st.integers(0, 4), st.integers(0, 4)).map(sorted),
    pick=st.data(),
)
def test_a_query_spanning_hour_minute_and_unrolled_raw_data_equals_the_raw_query(data, cuts, pick):
    # hour rows before the first cut, minute rows up to the second, and the newest part rolled up
    # on the fly from raw points (as the query engine does for windows not yet rolled up)
    kind, batch = data
    agg = pick.draw(st.sampled_from(AGGS[TYPE[kind]]))
    hour_end, minute_end = cuts[0] * HOUR_NS, cuts[1] * HOUR_NS
    t = batch.points.column("time_unix_nano").to_numpy()
    stored = batch.points.filter(pa.array(t < minute_end))
    tail = batch.points.filter(pa.array(t >= minute_end))
    minutes, carry = rollup(stored, batch.series, MINUTE_NS)
    hours = rollup_rollups(minutes, HOUR_NS)
    tail_rows, _ = rollup(tail, batch.series, MINUTE_NS, carry)
    ws_h, ws_m = hours.column("window_start_ns"), minutes.column("window_start_ns")
    stitched = pa.concat_tables(
        [
            hours.filter(pc.less(ws_h, hour_end)),
            minutes.filter(pc.greater_equal(ws_m, hour_end)),
            tail_rows,
        ]
    )
    for step in (HOUR_NS, 2 * HOUR_NS):
        q = RangeQuery("m", 0, SPAN_NS, step, agg=agg)
        assert_same(range_from_rollups(stitched, q, TYPE[kind]).values, raw_answer(batch, q))


def test_counter_example_from_the_query_docs():
    batch = metric_batch(
        [COUNTER], counter_points((5, 10, 0), (15, 15, 0), (25, 20, 0), (35, 3, 30), (45, 8, 30))
    )
    rows, _ = rollup(batch.points, batch.series, 10 * S)
    q = RangeQuery("requests", 10 * S, 50 * S, 10 * S, agg="rate")
    assert range_from_rollups(rows, q, "sum").values.tolist() == [0.5, 0.5, 0.3, 0.5]


def test_buckets_without_rows_are_nan():
    batch = metric_batch([COUNTER], counter_points((65, 10, 0)))
    rows, _ = rollup(batch.points, batch.series, MINUTE_NS)
    q = RangeQuery("requests", 0, 3 * MINUTE_NS, MINUTE_NS, agg="count")
    assert_same(range_from_rollups(rows, q, "sum").values, [np.nan, 1.0, np.nan])


# -- errors ----------------------------------------------------------------------------------------


def gauge_rows():
    g = series("g")
    batch = metric_batch([g], [{"s": g, "time_unix_nano": 5 * S, "value": 1.0}])
    return rollup(batch.points, batch.series, MINUTE_NS)[0]


@pytest.mark.parametrize("kind", ["gauge", "sum", "summary"])
def test_percentiles_of_values_need_the_raw_tier(kind):
    with pytest.raises(QueryError, match=f"percentiles of {kind} 'g' need the raw tier"):
        range_from_rollups(gauge_rows(), RangeQuery("g", 0, HOUR_NS, MINUTE_NS, agg="p95"), kind)


@pytest.mark.parametrize(
    ("agg", "kind", "message"),
    [
        ("rate", "gauge", "agg 'rate' is not defined for gauge 'g'; accepted: avg, min"),
        ("last", "histogram", "agg 'last' is not defined for histogram 'g'"),
        ("median", "gauge", "unknown agg 'median'; accepted: avg"),
    ],
)
def test_aggregations_a_type_does_not_have_are_refused_as_by_the_raw_query(agg, kind, message):
    with pytest.raises(QueryError, match=message):
        range_from_rollups(gauge_rows(), RangeQuery("g", 0, HOUR_NS, MINUTE_NS, agg=agg), kind)


def test_bad_step_and_range_are_refused():
    with pytest.raises(QueryError, match="step_ns must be > 0, got 0"):
        range_from_rollups(gauge_rows(), RangeQuery("g", 0, HOUR_NS, 0), "gauge")
    with pytest.raises(QueryError, match="end_ns 0 is before start_ns 5"):
        range_from_rollups(gauge_rows(), RangeQuery("g", 5, 0, MINUTE_NS), "gauge")


def test_windows_wider_than_the_step_are_refused():
    hours = rollup_rollups(gauge_rows(), HOUR_NS)
    with pytest.raises(QueryError, match="wider than step_ns"):
        range_from_rollups(hours, RangeQuery("g", 0, HOUR_NS, MINUTE_NS), "gauge")


def test_overlapping_rows_of_one_series_are_a_wiring_error():
    rows = gauge_rows()
    both = pa.concat_tables([rows, rollup_rollups(rows, HOUR_NS)])
    with pytest.raises(ValueError, match="overlap"):
        range_from_rollups(both, RangeQuery("g", 0, HOUR_NS, HOUR_NS), "gauge")


def test_explicit_histograms_with_different_bounds_in_range_cannot_give_percentiles():
    h = series("h", "histogram", temporality="delta")
    pts = [
        {"s": h, "time_unix_nano": 1 * S, "count": 1, "value": 1.0, "bounds": [1.0], "bucket_counts": [1, 0]},
        {
            "s": h,
            "time_unix_nano": 61 * S,
            "count": 1,
            "value": 1.0,
            "bounds": [2.0],
            "bucket_counts": [0, 1],
        },
    ]
    batch = metric_batch([h], pts)
    rows, _ = rollup(batch.points, batch.series, MINUTE_NS)
    q = RangeQuery("h", 0, 2 * MINUTE_NS, MINUTE_NS, agg="p50")
    with pytest.raises(QueryError, match=r"bucket bounds differ inside the range \(\[1.0\] vs \[2.0\]\)"):
        range_from_rollups(rows, q, "histogram")
    with pytest.raises(QueryError, match="bucket bounds differ"):
        raw_answer(batch, q)


# -- tier choice -----------------------------------------------------------------------------------

NOW = 200 * DAY_NS
M, H, D = MINUTE_NS, HOUR_NS, DAY_NS


@pytest.mark.parametrize(
    ("start_ago", "step", "tier"),
    [
        (H, 15 * S, RAW),  # step under a minute: raw
        (H, M, MINUTE),
        (D, 5 * M, MINUTE),
        (D, H, HOUR),
        (60 * D, H, HOUR),
        (10 * D, 5 * M, MINUTE),  # raw no longer covers the start
        (60 * D, 5 * M, MINUTE),  # nothing with window <= step covers it: the one reaching furthest back
        (10 * D, 30 * S, RAW),  # only raw has a window <= 30 s
        (D, 90 * S, RAW),  # 1-minute windows do not divide 90 s: raw while it covers the start
        (10 * D, 90 * S, MINUTE),  # ... and 1-minute rows after that
        (7 * D, 90 * S, RAW),  # exactly at raw's retention: still covered
        (7 * D + 1, 90 * S, MINUTE),
        (100 * D, 2 * H, HOUR),
    ],
)
def test_choose_tier(start_ago, step, tier):
    assert choose_tier(NOW - start_ago, NOW, step, NOW, RetentionConfig()) is tier


def test_choose_tier_falls_back_to_a_finer_tier_that_still_covers_the_start():
    short_hours = RetentionConfig(hour_ns=7 * DAY_NS)
    assert choose_tier(NOW - 20 * D, NOW, H, NOW, short_hours) is MINUTE
    assert choose_tier(NOW - 20 * D, NOW, H, NOW, {"1h": 7 * DAY_NS}) is MINUTE
    assert choose_tier(NOW - 20 * D, NOW, H, NOW) is HOUR  # defaults


def test_choose_tier_refuses_a_bad_request():
    with pytest.raises(QueryError, match="step_ns must be > 0"):
        choose_tier(0, 10, 0, NOW)
    with pytest.raises(QueryError, match="end_ns 0 is before start_ns 10"):
        choose_tier(10, 0, M, NOW)


@pytest.mark.parametrize(
    ("kind", "agg", "answerable"),
    [
        ("gauge", "avg", True),
        ("gauge", "p95", False),
        ("sum", "rate", True),
        ("sum", "p50", False),
        ("histogram", "p99.9", True),
        ("exponential_histogram", "p50", True),
        ("summary", "p50", False),
        ("summary", "increase", True),
        ("gauge", "rate", False),
    ],
)
def test_answerable_from_rollups(kind, agg, answerable):
    assert answerable_from_rollups(kind, agg) is answerable
